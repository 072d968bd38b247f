"""`gmx_dbm train CONFIG`: train a deepBackmap model from a TOML/YAML config."""
from __future__ import annotations

HELP = "train a backmapping model from a config file (TOML or YAML)"


def add_arguments(p):
    p.add_argument("config", help="training config (.toml, or .yaml with PyYAML)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the config's output folder")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps in total (checkpointed; resume later)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output folder (checkpoints, log, model); default: the config's `output`")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import logging

    from ..train.loop import train
    path = train(args.config, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress,
                 output=args.output)
    logging.getLogger("gmx_dbm").info("model written to %s", path)
    return 0
