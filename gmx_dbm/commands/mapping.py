"""`gmx_dbm mapping`: what mapping files do to a topology, and their expanded per-molecule form."""
from __future__ import annotations

HELP = "show how mapping files cut a topology's molecules into beads; write the expanded per-molecule maps"


def add_arguments(parser) -> None:
    parser.add_argument("-p", dest="topology", required=True, metavar="AA.top", help="all-atom topology")
    parser.add_argument("-m", dest="mapping", required=True, action="extend", nargs="+", metavar="MAP",
                        help="mapping files: repeat-unit, backward or per-molecule (docs/MAPPING_FORMAT.md)")
    parser.add_argument("-o", dest="output", metavar="EXPANDED.map",
                        help="write the per-molecule mapping of each moleculetype (several moleculetypes: "
                             "EXPANDED_<name>.map each)")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                        help="preprocessor define for the topology, as grompp -D (repeatable)")


def run(args) -> int:
    import sys

    from ..mapping import read_mapping, write_expanded
    from ..mapping.writer import describe
    from ..topology import read_topology

    system = read_topology(args.topology, defines=args.defines or None)
    smap = read_mapping(args.mapping, system)
    sys.stdout.write(describe(smap))
    if args.output:
        write_expanded(smap, args.output, sources=args.mapping)
    return 0
