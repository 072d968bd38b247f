#!/usr/bin/env python3
"""Time and peak RSS of the pair search (``gmx_dbm.neighbors.neighbor_pairs``) on the sPS melt and on
that box replicated along x, as the thermalisation builds its Verlet list (float32, shift vectors) and as
the analysis searches (float64, distances).

Usage: python benchmarks/bench_neighbors.py [--copies 1 10] [--cutoff 0.8] [--threads 1] [--chunk N]

The frame is sps/aa.gro of the published sPS reference data ($GMX_DBM_SHARED_DATA; default: shared/data
beside the repository), 5832 atoms. Every row runs in a fresh process, so that its peak RSS is its own;
"before" is the RSS with the frame loaded, before the first search. Prints one table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GMX_DBM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def one(copies: int, cutoff: float, dtype: str, chunk: int | None, threads: int) -> dict:
    import numpy as np
    import torch
    sys.path.insert(0, str(ROOT))
    from gmx_dbm.io import read_frame
    from gmx_dbm.neighbors import neighbor_pairs
    torch.set_num_threads(threads)
    fr = read_frame(SHARED / "sps" / "aa.gro")
    x, box = np.asarray(fr.positions, dtype=np.float64), np.array(fr.box, dtype=np.float64)
    x = np.concatenate([x + k * box[0] for k in range(copies)])
    box[0] *= copies
    dt = torch.float32 if dtype == "float32" else torch.float64
    xt, bt = torch.tensor(x, dtype=dt), torch.tensor(box, dtype=dt)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kw = dict(shifts=True) if dtype == "float32" else dict(distances=True)
    t0 = time.perf_counter()
    out = neighbor_pairs(xt, bt, cutoff, chunk=chunk, **kw)
    wall = time.perf_counter() - t0
    return dict(atoms=len(x), pairs=len(out[0]), wall_s=wall, before_mb=before,
                peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--cutoff", type=float, default=0.8, help="nm (the thermalisation's 0.7 + 0.1 skin)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=None, help="candidates per block (default: the CPU default)")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        copies, dtype = args.row.split(":")
        print(json.dumps(one(int(copies), args.cutoff, dtype, args.chunk, args.threads)))
        return
    if not (SHARED / "sps" / "aa.gro").is_file():
        raise SystemExit(f"shared data not found at {SHARED}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.threads} "
          f"thread(s); cut-off {args.cutoff} nm; chunk {args.chunk or 'default'}")
    print(f"{'atoms':>8s} {'dtype':>8s} {'pairs':>10s} {'time s':>8s} {'before MB':>10s} {'peak MB':>8s}")
    for copies in args.copies:
        for dtype in ("float32", "float64"):
            cmd = [sys.executable, __file__, "--row", f"{copies}:{dtype}", "--cutoff", str(args.cutoff),
                   "--threads", str(args.threads)] + (["--chunk", str(args.chunk)] if args.chunk else [])
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(f"{r['atoms']:8d} {dtype:>8s} {r['pairs']:10d} {r['wall_s']:8.2f} {r['before_mb']:10.0f} "
                  f"{r['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
