"""Command line: `gmx_dbm <command> ...`.

Each command lives in ``gmx_dbm.commands.<name>`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; ``run`` calls plain library functions. Command modules must be light to import
(heavy imports inside ``run``) so that ``gmx_dbm --help`` is fast.

Errors the package raises on purpose (``GmxDbmError``) become one line on stderr and exit code 2;
``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import GmxDbmError, RankStopped
from .parallel import tune_allocator

COMMANDS = ["backmap", "map", "mapping", "energy", "evaluate", "train", "relax"]

log = logging.getLogger("gmx_dbm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmx_dbm", description="Backmap coarse-grained GROMACS structures with deepBackmap.")
    parser.add_argument("--version", action="version", version=f"gmx_dbm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"gmx_dbm.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gmx_dbm.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and debug logging")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    level = logging.DEBUG if debug else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    # third-party chatter (MDAnalysis warns about optional netCDF4 on import) only with --debug
    for noisy in ("MDAnalysis", "parmed"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)
    tune_allocator()
    try:
        return int(args._run(args) or 0)
    except RankStopped as exc:   # another MPI rank failed; rank 0 prints the error
        return exc.code
    except GmxDbmError as exc:
        if debug:
            raise
        print(f"gmx_dbm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gmx_dbm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
