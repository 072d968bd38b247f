#!/usr/bin/env python3
"""Time of backmap's thermalisation (``ff.dynamics.RestrainedLangevin.run``) on a real sPS frame, split
into its parts.

Usage: python benchmarks/bench_thermalise.py [--steps 300] [--threads 2] [--frame PATH] [--noise 0.0]
       [--device cpu] [--repeat 1]

The system is the 5832-atom sPS melt (topologies/sps.top, mappings/sps.map), the frame the
first one of sps/t453/deepbackmap.xtc (a backmapped frame) made whole, the restraint centres its own
mapped bead centres; the dynamics are built as the backmap pipeline builds them (all bonds constrained,
chirality and CH-hydrogen penalties, 453 K, default non-bonded settings). ``--noise`` adds seeded Gaussian
noise (nm) to the positions for a rougher start.

Prints one table: steps, pair-list builds, seconds, seconds per step, and the exclusive time of each part
(manual timers wrapped around the dynamics' methods; parts that a version of the code lacks are absent).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gmx_dbm.backmap.steps import constraint_arrays  # noqa: E402
from gmx_dbm.ff import dynamics as D  # noqa: E402
from gmx_dbm.geometry import WholePlan  # noqa: E402
from gmx_dbm.parallel import tune_allocator  # noqa: E402
from gmx_dbm.io import read_frames  # noqa: E402
from gmx_dbm.mapping import read_mapping  # noqa: E402
from gmx_dbm.stereo import find_centres, handedness  # noqa: E402
from gmx_dbm.topology import read_topology  # noqa: E402

# part label -> method names of RestrainedLangevin (or functions of ff.dynamics) timed under it
PARTS = {
    "pair-list builds": ["_pairs", "_outer_pairs"],
    "pair-list prunes": ["_prune"],
    "pair forces": ["_pair_forces"],
    "bonded forces": ["_bonded_forces"],
    "restraints/penalties": ["_penalty_forces", "_restraint", "_chiral_penalty", "_hydrogen_penalty"],
    "constraints": ["project_bonds", "project_velocities", "_tables.project", "_tables.tangent"],
    "forces, rest": ["_forces"],   # before: autograd of bonded terms and restraints
}


class Timers:
    """Exclusive wall time per label of nested wrapped calls."""

    def __init__(self, sync):
        self.total = {}
        self.calls = {}
        self.stack = []
        self.sync = sync

    def wrap(self, label, fn):
        @functools.wraps(fn)
        def timed(*a, **k):
            self.sync()
            t0 = time.perf_counter()
            self.stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                self.sync()
                dt = time.perf_counter() - t0
                child = self.stack.pop()
                self.total[label] = self.total.get(label, 0.0) + dt - child
                self.calls[label] = self.calls.get(label, 0) + 1
                if self.stack:
                    self.stack[-1] += dt
        return timed


def instrument(dyn, timers):
    for label, names in PARTS.items():
        for name in names:
            owner, _, attr = name.rpartition(".")
            obj = getattr(dyn, owner, None) if owner else dyn
            if obj is not None and hasattr(obj, attr):
                setattr(obj, attr, timers.wrap(label, getattr(obj, attr)))
            elif not owner and hasattr(D, name):
                setattr(D, name, timers.wrap(label, getattr(D, name)))


def build(args):
    data = Path(args.data) / "sps"
    system = read_topology(ROOT / "topologies" / "sps.top")   # the shared topol.top with its force field
    flat = system.flat()
    mflat = read_mapping([ROOT / "mappings" / "sps.map"], system).flat()
    frame = next(iter(read_frames(args.frame or data / "t453" / "deepbackmap.xtc", n_atoms=flat.n_atoms)))
    bonds, lengths = constraint_arrays(flat, "all-bonds")
    x = WholePlan(flat.n_atoms, bonds.numpy()).apply(frame.positions, frame.box)
    if args.noise:
        x = x + np.random.default_rng(7).normal(scale=args.noise, size=x.shape)
    centres = mflat.centre @ x
    ch = find_centres(flat)
    signs = handedness(x, frame.box, ch)
    kw = {"device": args.device} if args.device != "cpu" else {}
    dyn = D.RestrainedLangevin(flat, mflat.centre, 453.0, args.steps, bonds=bonds, lengths=lengths,
                               chiral=(ch, signs), hydrogens=ch, **kw,
                               **({"outer_skin": args.outer_skin} if args.outer_skin else {}))
    return dyn, x, np.asarray(frame.box, dtype=np.float64), centres


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="shared data folder")
    ap.add_argument("--frame", default=None, help="all-atom frame (default: sps/t453/deepbackmap.xtc, first)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--noise", type=float, default=0.0, help="Gaussian noise on the positions, nm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--outer-skin", type=float, default=None, help="nm (default: the dynamics' own)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_allocator()   # as the gmx_dbm command does
    dyn, x, box, centres = build(args)
    cuda = args.device.startswith("cuda")
    timers = Timers(torch.cuda.synchronize if cuda else (lambda: None))
    instrument(dyn, timers)
    # one short warm-up run (allocator, first-call overheads), not timed
    rng_device = args.device if cuda else "cpu"
    dyn.run(x, box, centres, torch.Generator(device=rng_device).manual_seed(1), steps=5)
    rows = []
    for rep in range(args.repeat):
        timers.total.clear()
        timers.calls.clear()
        t0 = time.perf_counter()
        out = dyn.run(x, box, centres, torch.Generator(device=rng_device).manual_seed(0))
        sec = time.perf_counter() - t0
        rows.append((sec, dict(timers.total), dict(timers.calls)))
    sec, parts, calls = min(rows, key=lambda r: r[0])
    print(f"sPS {len(x)} atoms, {args.threads} threads, device {args.device}, noise {args.noise:g} nm")
    print(f"{'steps':>6s} {'builds':>7s} {'prunes':>7s} {'seconds':>8s} {'s/step':>8s}")
    print(f"{args.steps:6d} {dyn.last_rebuilds:7d} {getattr(dyn, 'last_prunes', dyn.last_rebuilds):7d} {sec:8.2f} "
          f"{sec / args.steps:8.4f}")
    print(f"{'part':28s} {'seconds':>8s} {'share':>6s} {'calls':>6s}")
    for label in PARTS:
        if label in parts:
            print(f"{label:28s} {parts[label]:8.2f} {parts[label] / sec:6.1%} {calls[label]:6d}")
    rest = sec - sum(parts.values())
    print(f"{'integrator, rest':28s} {rest:8.2f} {rest / sec:6.1%}")
    drift = np.linalg.norm(out - x, axis=1)
    print(f"mean displacement {drift.mean():.4f} nm, max {drift.max():.4f} nm")


if __name__ == "__main__":
    main()
