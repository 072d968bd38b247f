"""Backmapping speed and memory: atoms/s and peak RSS for one sPS frame and for a replicated box.

Usage: python benchmarks/bench_backmap.py [--model sps] [--gibbs 4] [--orientations 1] [--replicas 1 10]
Prints a table; each row runs in a fresh process so that peak RSS belongs to that row alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def replicate(n: int, workdir: Path):
    """A .top and CG .gro with the example sPS box replicated n times along x."""
    import numpy as np

    from gmx_dbm.io import AtomInfo, Frame, read_frame, write_frames
    from gmx_dbm.geometry import make_whole
    cg = read_frame(ROOT / "examples" / "sps" / "cg.gro")
    box = np.array(cg.box, copy=True)
    # molecules whole first, else a chain cut by the box edge would be torn apart in the copy: consecutive
    # beads of a chain (same residue number) are bonded or one apart, so they serve as its bonds
    a = np.nonzero(cg.atoms.resids[1:] == cg.atoms.resids[:-1])[0]
    whole = make_whole(cg.positions, box, np.stack([a, a + 1], 1))
    pos = np.concatenate([whole + k * box[0] for k in range(n)])
    big = box.copy()
    big[0] *= n
    atoms = AtomInfo(np.tile(cg.atoms.names, n), np.tile(cg.atoms.resnames, n),
                     np.concatenate([cg.atoms.resids + k * cg.atoms.resids.max() for k in range(n)]))
    write_frames(workdir / f"cg{n}.gro", atoms, [Frame(pos, big)])
    top = (ROOT / "topologies" / "sps.top").read_text()
    ff = ROOT / "topologies"
    top = top.replace('#include "', f'#include "{ff}/')
    lines = top.rstrip().splitlines()
    name, count = lines[-1].split()
    lines[-1] = f"{name} {int(count) * n}"
    (workdir / f"sps{n}.top").write_text("\n".join(lines) + "\n")
    return workdir / f"cg{n}.gro", workdir / f"sps{n}.top"


def one(args):
    import torch

    import logging

    from gmx_dbm.backmap import backmap
    # the per-frame split (generation / thermalisation, pair-list builds) goes to stderr; main prints it
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cg, top = replicate(args.one, tmp)
        t = time.perf_counter()
        s = backmap(cg, top, [ROOT / "mappings" / "sps.map"], tmp / "out.gro", model=args.model,
                    gibbs=args.gibbs, orientations=args.orientations, seed=0, progress=False,
                    proposals=args.proposals, quality=False, md_steps=args.md_steps, temperature=453.0)
        s["seconds"] = time.perf_counter() - t
        s["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(s))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--gibbs", type=int, default=None)
    ap.add_argument("--orientations", type=int, default=None)
    ap.add_argument("--proposals", type=int, default=None)
    ap.add_argument("--md-steps", type=int, default=None, help="thermalisation steps (default: the card's)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"gibbs {args.gibbs}, orientations {args.orientations}, proposals {args.proposals}, "
          f"md steps {args.md_steps}, "
          f"model {args.model or 'default'}")
    print(f"{'atoms':>8} {'seconds':>9} {'atoms/s':>9} {'peak RSS MB':>12}")
    for n in args.replicas:
        cmd = [sys.executable, __file__, "--one", str(n), "--threads", str(args.threads)]
        for opt in ("gibbs", "orientations", "proposals", "md_steps"):
            if getattr(args, opt) is not None:
                cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
        if args.model:
            cmd += ["--model", args.model]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"replicas {n}: failed\n{out.stderr[-2000:]}")
            continue
        s = json.loads(out.stdout.strip().splitlines()[-1])
        split = [ln for ln in out.stderr.splitlines() if "thermalised (" in ln]
        print(f"{s['atoms']:>8} {s['seconds']:>9.1f} {s['atoms'] / s['seconds']:>9.0f} {s['peak_rss_mb']:>12.0f}"
              + (f"   ({split[-1].split(': ', 1)[-1]})" if split else ""))


if __name__ == "__main__":
    main()
