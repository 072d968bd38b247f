"""`gmx_dbm map`: all-atom frames -> coarse-grained frames with a mapping file."""
from __future__ import annotations

HELP = "map an all-atom structure/trajectory to CG beads (molecules made whole along bonds first)"


def add_arguments(parser) -> None:
    parser.add_argument("-f", dest="traj", required=True, metavar="AA.xtc|.gro|.pdb",
                        help="all-atom trajectory or structure to map")
    parser.add_argument("-s", dest="structure", metavar="AA.gro",
                        help="all-atom structure; optional, checked against the topology's atoms")
    parser.add_argument("-p", dest="topology", required=True, metavar="AA.top", help="all-atom topology")
    parser.add_argument("-m", dest="mapping", required=True, action="extend", nargs="+", metavar="MAP",
                        help="mapping file(s), one per moleculetype (docs/MAPPING_FORMAT.md)")
    parser.add_argument("-o", dest="output", required=True, metavar="CG.xtc|.gro|.pdb",
                        help="CG output (written atomically; an existing file is backed up as #name.N#)")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                        help="preprocessor define for the topology, as grompp -D (repeatable)")
    parser.add_argument("--no-wrap", dest="wrap", action="store_false",
                        help="keep the beads of each molecule together instead of putting each bead into "
                             "the box (the default, as trjconv -pbc atom)")


def run(args) -> int:
    from ..io import check_writable
    from ..io.frames import READ_FORMATS, WRITE_FORMATS
    from ..topology import read_topology
    from ..errors import OutputError, TrajectoryError
    from ..mapping import map_trajectory, read_mapping
    from pathlib import Path

    # fail before any work on outputs that cannot be written or formats we do not know
    out = Path(args.output)
    if out.suffix.lower() not in WRITE_FORMATS:
        raise OutputError(f"{out}: unknown output format '{out.suffix}'; known: {', '.join(WRITE_FORMATS)}")
    check_writable(out)
    if Path(args.traj).suffix.lower() not in READ_FORMATS:
        raise TrajectoryError(f"unknown trajectory format '{Path(args.traj).suffix}'; known: "
                              f"{', '.join(READ_FORMATS)}", path=args.traj)
    system = read_topology(args.topology, defines=args.defines or None)
    mapping = read_mapping(args.mapping, system)
    map_trajectory(args.traj, system, mapping, out, structure=args.structure, wrap=args.wrap)
    return 0
