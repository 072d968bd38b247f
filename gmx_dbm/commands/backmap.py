"""`gmx_dbm backmap`: CG frames -> all-atom frames with a deepBackmap model."""
from __future__ import annotations

import argparse

from ..errors import InputError

HELP = "backmap coarse-grained frames (.gro/.xtc) to all-atom frames (.gro/.xtc/.pdb)"


def add_arguments(p):
    p.add_argument("-c", "--cg", required=True, metavar="CG", help="CG structure or trajectory (.gro, .xtc)")
    p.add_argument("-p", "--topology", required=True, metavar="TOP", help="all-atom GROMACS topology (.top)")
    p.add_argument("-m", "--mapping", required=True, action="extend", nargs="+", metavar="MAP",
                   help="mapping files (.map), one per moleculetype: -m a.map b.map (or -m a.map -m b.map)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output (.gro, .xtc, .pdb)")
    p.add_argument("-f", "--mdp", default=None, metavar="MDP",
                   help="your all-atom GROMACS run parameters (.mdp): constraints, ref-t and the cut-offs and "
                        "electrostatics (rvdw, rcoulomb, coulombtype, epsilon-rf) of the force field the frames "
                        "are thermalised in; --constraints and --temperature given explicitly win")
    p.add_argument("--model", default=None,
                   help="model: a shipped name (sps, sps_monomer, transfer) or a .safetensors path; default: the first "
                        "shipped model that fits the topology")
    p.add_argument("--gibbs", type=int, default=None, help="Gibbs refinement sweeps (paper: 4; default: the model card's)")
    p.add_argument("--orientations", type=int, default=None,
                   help="candidates per atom (rotations about the bead axis); the lowest-energy one is kept")
    p.add_argument("--proposals", type=int, default=None, metavar="P",
                   help="candidates per generated density: its collapsed mean plus P-1 points drawn from it; "
                        "with Gibbs sweeps the current position competes too (energy-based choice)")
    p.add_argument("--proposal-sweeps", type=int, default=None, metavar="N",
                   help="use --proposals in the last N Gibbs sweeps only (a refinement; default: the card's)")
    p.add_argument("--select-temperature", type=float, default=None, metavar="K",
                   help="with --orientations > 1: 0 keeps the lowest-energy candidate (paper), T > 0 draws "
                        "one with Boltzmann weights at T kelvin (default: the model card's)")
    p.add_argument("--temperature", type=float, default=None, metavar="K",
                   help="temperature of the CG system: the generated frames are thermalised at it (and relaxed "
                        "at it with --relax); default: ref-t of -f MDP, else the model card's (its training "
                        "data's)")
    p.add_argument("--md-steps", type=int, default=None, metavar="N",
                   help="thermalisation: N steps (4 fs) of Langevin dynamics in the force field with every bead "
                        "restrained to its CG position (0: off; default: the model card's, else 300)")
    p.add_argument("--no-stereo", action="store_true",
                   help="do not enforce the handedness of tetrahedral centres (default: the model card's table, "
                        "learnt from its training data: inverted centres are redrawn by the generator)")
    p.add_argument("--stereo", action="store_true", help=argparse.SUPPRESS)  # the default; accepted for old scripts
    p.add_argument("--stereo-template", default=None, metavar="AA",
                   help="take the handedness of tetrahedral centres from this all-atom structure of the system "
                        "(.gro/.pdb/.xtc, topology order) instead of the model card")
    p.add_argument("--no-quality", action="store_true",
                   help="skip the per-frame quality report (clashes, energies per term, warnings)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical output)")
    p.add_argument("--frames", default=None, metavar="SEL", type=frame_selection,
                   help="backmap only these CG frames (0-based): a slice START:STOP[:STEP] or a list 0,5,9")
    p.add_argument("--constraints", default="auto", choices=["auto", "none", "h-bonds", "all-bonds"],
                   help="project bonds onto their topology lengths (auto: as -f MDP's constraints, else as the "
                        "model's training data)")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                   help="preprocessor define for the topology, as grompp -D")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="cpu, cuda or cuda:N: the device everything runs on (under MPI, cuda means GPU local rank "
                        "%% GPUs); a device this machine lacks is an error")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per process (0: torch's default; under MPI the cores each rank was given)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="the generator network's arithmetic: fp32, or bf16/fp16 autocast (fp16: CUDA only); "
                        "sampling, energies and dynamics stay in float32")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint OUT.cpt (frames already written are kept; "
                        "the result is identical to an uninterrupted run)")
    p.add_argument("--relax", action="store_true",
                   help="relax the result in GROMACS (energy minimisation + restrained MD); see `gmx_dbm relax`")
    # ---- relaxation options (used with --relax; shared with `gmx_dbm relax`) ----
    from ._relax_args import add_relax_options
    add_relax_options(p)
    # ---- end of relaxation options ----


class FrameSelection:
    """Frame indices from START:STOP[:STEP] (open ends allowed) or a comma list; supports ``in``."""

    def __init__(self, text: str):
        self.text = text
        self.items = None
        if ":" in text:
            parts = [int(x) if x.strip() else None for x in text.split(":")]
            if len(parts) > 3 or any(x is not None and x < 0 for x in parts) or (len(parts) == 3 and parts[2] == 0):
                raise ValueError(text)
            self.start, self.stop = parts[0] or 0, parts[1]
            self.step = (parts[2] if len(parts) == 3 else None) or 1
        else:
            self.items = {int(x) for x in text.split(",")}
            if any(x < 0 for x in self.items):
                raise ValueError(text)

    def __contains__(self, i: int) -> bool:
        if self.items is not None:
            return i in self.items
        return i >= self.start and (self.stop is None or i < self.stop) and (i - self.start) % self.step == 0


def frame_selection(text: str) -> FrameSelection:
    try:
        return FrameSelection(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP[:STEP] or a list 0,5,9 of frame indices "
                                         f"(0-based, not negative), got {text!r}") from None


def stereo_choice(args):
    """The ``stereo`` argument of ``backmap`` from the command line."""
    if args.no_stereo and (args.stereo or args.stereo_template):
        raise InputError("--no-stereo contradicts --stereo/--stereo-template")
    return args.stereo_template or ("none" if args.no_stereo else "auto")


def run(args) -> int:
    import logging
    import sys

    from ..backmap import backmap
    from ..parallel import world
    if not world().is_root:   # one log: rank 0's (a failing rank's error reaches it)
        logging.getLogger("gmx_dbm").setLevel(logging.ERROR)
    if args.relax:
        return _relax_after_backmap(args)
    backmap(args.cg, args.topology, args.mapping, args.output, model=args.model, gibbs=args.gibbs,
            orientations=args.orientations, seed=args.seed, constraints=args.constraints,
            defines=args.defines or None, device=args.device, select_temperature=args.select_temperature,
            proposals=args.proposals, proposal_sweeps=args.proposal_sweeps, quality=not args.no_quality,
            md_steps=args.md_steps, temperature=args.temperature, stereo=stereo_choice(args), mdp=args.mdp,
            frames=args.frames, progress=sys.stderr.isatty() and not getattr(args, "quiet", False),
            resume=args.resume, threads=args.threads or None, precision=args.precision)
    return 0


def _relax_after_backmap(args) -> int:
    """``--relax``: backmap into the work directory, then relax each frame in GROMACS (``gmx_dbm.workflow``)."""
    from ..workflow import backmap_then_relax
    from ._relax_args import options_from_args
    backmap_then_relax(args.cg, args.topology, args.mapping, args.output, options_from_args(args),
                       workdir=args.workdir, defines=args.defines or None, model=args.model, gibbs=args.gibbs,
                       orientations=args.orientations, seed=args.seed, constraints=args.constraints,
                       device=args.device, select_temperature=args.select_temperature,
                       proposals=args.proposals, proposal_sweeps=args.proposal_sweeps, md_steps=args.md_steps,
                       temperature=args.temperature, quality=not args.no_quality, stereo=stereo_choice(args),
                       mdp=args.mdp, frames=args.frames, threads=args.threads or None)
    return 0
