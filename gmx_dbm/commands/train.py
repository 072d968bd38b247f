"""`gmx_dbm train CONFIG`: train a deepBackmap model from a TOML/YAML config (`--init`: write one).

`torchrun --nproc-per-node N -m gmx_dbm train CONFIG` trains in N processes (DistributedDataParallel);
rank 0 reports and writes, the other ranks log warnings and errors only."""
from __future__ import annotations

HELP = "train a backmapping model from a config file (TOML or YAML); --init writes a starting config"


def add_arguments(p):
    p.add_argument("config", help="training config (.toml, or .yaml with PyYAML); with --init: the file to write")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the config's output folder")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps in total (checkpointed; resume later)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output folder (checkpoints, log, model); default: the config's `output`")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("starting config (--init)")
    g.add_argument("--init", action="store_true",
                   help="write a starting config for your files to CONFIG instead of training")
    g.add_argument("-f", dest="aa", action="extend", nargs="+", default=[], metavar="AA.xtc",
                   help="all-atom training frames (.xtc/.gro), in topology order")
    g.add_argument("-c", dest="cg", action="extend", nargs="+", default=[], metavar="CG.xtc",
                   help="matching CG frames (default: mapped from the all-atom frames)")
    g.add_argument("-p", dest="topology", metavar="AA.top", help="all-atom topology")
    g.add_argument("-m", dest="mapping", action="extend", nargs="+", default=[], metavar="MAP",
                   help="mapping files (docs/MAPPING_FORMAT.md)")
    g.add_argument("--validation", action="extend", nargs="+", default=[], metavar="AA.xtc",
                   help="all-atom frames held out for validation")
    g.add_argument("--mdp", default=None, metavar="MD.mdp", help="your MD's run parameters: the constraints")
    g.add_argument("--name", default=None, help="model name (default: the config file's stem)")
    g.add_argument("--steps", type=int, default=2000, help="training steps (default: 2000)")


def run(args) -> int:
    import logging

    from ..errors import InputError
    if args.init:
        from ..train.init import write_starter_config
        missing = [flag for flag, value in (("-f", args.aa), ("-p", args.topology), ("-m", args.mapping))
                   if not value]
        if missing:
            raise InputError(f"--init needs {', '.join(missing)} (all-atom frames, topology, mapping)")
        write_starter_config(args.config, args.aa, args.topology, args.mapping, cg=args.cg or None,
                             validation=args.validation or None, name=args.name, mdp=args.mdp, steps=args.steps)
        return 0
    from ..devices import pin_cpu_kernels
    pin_cpu_kernels()     # before the first tensor operation: runs repeat to the bit on other CPUs
    from ..train.distributed import launched
    from ..train.loop import train
    ranks = launched()
    if ranks is not None and ranks[0] != 0:
        pkg = logging.getLogger("gmx_dbm")
        pkg.setLevel(max(logging.WARNING, pkg.getEffectiveLevel()))
    path = train(args.config, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress,
                 output=args.output)
    logging.getLogger("gmx_dbm").info("model written to %s", path)
    return 0
