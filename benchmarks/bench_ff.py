#!/usr/bin/env python3
"""Energy + gradient time of the torch force field, and the time of one thermalisation step, on sPS
(5832 atoms) and a 10x replica (58320 atoms).

Usage: python benchmarks/bench_ff.py [--repeat 3] [--float32]
Prints a table: system, atoms, dtype, pairs within the cut-off, seconds (best of N), peak RSS of the process.
The replica stacks 10 copies of the frame along the box vector a (a 10x longer box).
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gmx_dbm.ff.forcefield import ForceField, NonbondedSettings  # noqa: E402
from gmx_dbm.geometry import make_whole  # noqa: E402
from gmx_dbm.io import read_frame  # noqa: E402
from gmx_dbm.topology import read_topology  # noqa: E402

log = logging.getLogger("bench_ff")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(system, x, box, dtype, repeat):
    ff = ForceField(system.flat(), NonbondedSettings(), dtype=dtype)
    pos = torch.tensor(x, dtype=dtype)[None]
    b = torch.tensor(box, dtype=dtype)[None]
    n_pairs = len(ff.pairs(pos[0], b[0])[0])
    best = float("inf")
    for _ in range(repeat):
        p = pos.clone().requires_grad_(True)
        t = time.perf_counter()
        e = sum(ff(p, b).values()).sum()
        e.backward()
        best = min(best, time.perf_counter() - t)
    return n_pairs, best, float(e.detach())


def bench_md(system, x, box, steps: int = 20) -> float:
    """Seconds per thermalisation step (backmap's --md-steps: restrained Langevin, all bonds constrained)."""
    from gmx_dbm.ff.dynamics import RestrainedLangevin
    from gmx_dbm.mapping import read_mapping
    flat = system.flat()
    mflat = read_mapping([ROOT / "mappings" / "sps.map"], system).flat()
    idx = np.concatenate([i for i, _ in flat.bonded["bonds"].values()])
    lengths = np.concatenate([p[:, 0] for _, p in flat.bonded["bonds"].values()])
    dyn = RestrainedLangevin(flat, mflat.centre, 453.0, steps, bonds=idx, lengths=lengths)
    t = time.perf_counter()
    dyn.run(x, box, mflat.centre @ x, torch.Generator().manual_seed(0))
    return (time.perf_counter() - t) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="shared data folder")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--float32", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dtype = torch.float32 if args.float32 else torch.float64
    system = read_topology(ROOT / "topologies" / "sps.top")
    frame = read_frame(Path(args.data) / "sps" / "aa.gro")
    rows = []
    # whole molecules first: in the longer box a bond across the old boundary would see the wrong copy
    flat = system.flat()
    bonds = np.concatenate([idx for idx, _ in flat.bonded["bonds"].values()])
    whole = make_whole(frame.positions, frame.box, bonds)
    for copies in (1, 10):
        big = read_topology(ROOT / "topologies" / "sps.top")
        big.molecules = [(name, count * copies) for name, count in system.molecules]
        shift = np.arange(copies)[:, None, None] * frame.box[0]
        x = (whole[None] + shift).reshape(-1, 3)
        box = frame.box.copy()
        box[0] *= copies
        n_pairs, sec, e = bench(big, x, box, dtype, args.repeat)
        md = bench_md(big, x, box)
        rows.append((f"sPS x{copies}", big.n_atoms, str(dtype).replace("torch.", ""), n_pairs, sec, md, peak_rss_mb(), e))
    print(f"{'system':10s} {'atoms':>7s} {'dtype':>8s} {'pairs<rc':>10s} {'E+grad s':>9s} {'MD step s':>10s} "
          f"{'peak RSS MB':>12s} {'E total':>14s}")
    for r in rows:
        print(f"{r[0]:10s} {r[1]:7d} {r[2]:>8s} {r[3]:10d} {r[4]:9.2f} {r[5]:10.3f} {r[6]:12.0f} {r[7]:14.2f}")
    print("MD step: one step of backmap's thermalisation (float32, all bonds constrained, 0.7 nm cut-off)")


if __name__ == "__main__":
    main()
