"""Frames over MPI ranks: the same backmap run as 1 process x T threads and as R ranks x T/R threads
(``mpirun``), in one session, with the time ratio and whether the outputs are byte-identical.

Usage: python benchmarks/bench_mpi.py [--frames 8] [--cores 2] [--cg CG.xtc -p TOP -m MAP] [-- backmap options]
Without --cg: the shipped sPS example (5832 atoms) repeated as --frames frames, each with its bead positions
moved by seeded Gaussian noise of 0.01 nm so that the frames differ. Prints a table.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def example_frames(n: int, out: Path) -> Path:
    import numpy as np

    from gmx_dbm.io import AtomInfo, open_writer, read_frame
    fr = read_frame(ROOT / "examples" / "sps" / "cg.gro")
    rng = np.random.default_rng(0)
    base = fr.positions.copy()
    with open_writer(out, AtomInfo(fr.atoms.names, fr.atoms.resnames, fr.atoms.resids)) as w:
        for k in range(n):
            fr.positions = base + rng.normal(0.0, 0.01, base.shape)
            fr.time, fr.step = float(k), k
            w.write(fr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--ranks", type=int, nargs="+", default=None, help="rank counts (default: 1 and --cores)")
    ap.add_argument("--cg", default=None)
    ap.add_argument("-p", dest="top", default=str(ROOT / "topologies" / "sps.top"))
    ap.add_argument("-m", dest="map", default=str(ROOT / "mappings" / "sps.map"))
    ap.add_argument("extra", nargs="*", help="more backmap options (after --)")
    args = ap.parse_args()
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if mpirun is None:
        sys.exit("mpirun not found")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    extra = args.extra or ["--temperature", "453"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cg = Path(args.cg) if args.cg else example_frames(args.frames, tmp / "cg.xtc")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.frames} frames of {cg.name}; "
              f"backmap {' '.join(extra)}")
        print(f"{'ranks x threads':>16} {'seconds':>9} {'s/frame':>8} {'speed-up':>9} {'identical':>10}")
        first = ref = None
        for ranks in args.ranks or [1, args.cores]:
            threads = max(1, args.cores // ranks)
            out = tmp / f"aa_{ranks}.xtc"
            cmd = [sys.executable, "-m", "gmx_dbm", "-q", "backmap", "-c", str(cg), "-p", args.top, "-m", args.map,
                   "-o", str(out), "--threads", str(threads), *extra]
            if ranks > 1:
                # each rank bound to its own cores
                cmd = [mpirun, "-n", str(ranks), "--bind-to", "core", "--map-by", f"slot:PE={threads}", *cmd]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                print(f"{ranks} x {threads}: failed\n{r.stderr[-2000:]}")
                continue
            first = first or dt
            same = "-" if ref is None else ("yes" if out.read_bytes() == ref else "no")
            ref = ref or out.read_bytes()
            print(f"{f'{ranks} x {threads}':>16} {dt:>9.1f} {dt / args.frames:>8.1f} {first / dt:>9.2f} {same:>10}",
                  flush=True)


if __name__ == "__main__":
    main()
