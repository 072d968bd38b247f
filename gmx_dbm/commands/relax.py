"""`gmx_dbm relax`: energy minimisation + position-restrained MD in GROMACS (gmxapi, or the gmx command line).
Under ``mpirun -n N`` the frames are dealt out to the ranks and rank 0 writes the output and the summary
(``gmx_dbm.relax.ranks``).

The relaxation options (``add_relax_options``) are shared with ``gmx_dbm backmap --relax``
(``gmx_dbm/commands/_relax_args.py``).
"""
from __future__ import annotations

from ._relax_args import add_relax_options, options_from_args

HELP = "relax all-atom structures in GROMACS: steepest-descent EM, then position-restrained MD"


def add_arguments(p):
    p.add_argument("-c", "--conf", required=True, metavar="AA", help="all-atom structure or trajectory (.gro, .xtc, .pdb)")
    p.add_argument("-p", "--topology", required=True, metavar="TOP", help="all-atom GROMACS topology (.top)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="relaxed frames (.gro, .xtc, .pdb)")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                   help="preprocessor define for the topology, as grompp -D")
    p.add_argument("--summary", default=None, metavar="JSON", help="write the per-frame results as JSON")
    add_relax_options(p, standalone=True)


def _write_summary(path, summary):
    import json

    from ..io.safe import atomic_output
    if path:
        with atomic_output(path) as tmp:
            with open(tmp, "w") as fh:
                json.dump(summary, fh, indent=1, default=str)


def run(args) -> int:
    import logging

    from ..parallel import world as mpi_world
    from ..relax import relax
    world = mpi_world()
    if not world.is_root:   # one log: rank 0's (it names the frames other ranks relaxed; errors reach it)
        logging.getLogger("gmx_dbm").setLevel(logging.WARNING)
    summary = relax(args.conf, args.topology, args.output, options_from_args(args), workdir=args.workdir,
                    defines=args.defines or None, world=world)
    if world.is_root:
        _write_summary(getattr(args, "summary", None), summary)
    return 0
