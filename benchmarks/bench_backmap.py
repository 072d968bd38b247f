"""Backmapping speed and memory: atoms/s, peak RSS (and peak GPU memory on a GPU) and where the time goes,
for one sPS frame (the shipped example, 5832 atoms) and boxes of it replicated along x.

Usage: python benchmarks/bench_backmap.py [--model sps] [--replicas 1 10 40] [--device cuda] [--precision bf16]
       [--threads 2] [--md-steps N]
Prints a table; each row runs in a fresh process so that peak RSS belongs to that row alone. The split
columns are the seconds of each step of the pipeline (``backmap.steps``): generation, bond projection,
defect redraws, stereo repair, thermalisation; ``linear x`` is the time relative to the first row divided
by the atom ratio (1.0 = linear).
"""
from __future__ import annotations

import argparse
import json
import os
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
    from gmx_dbm.parallel import tune_allocator
    tune_allocator()   # as the gmx_dbm command does
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
                    proposals=args.proposals, quality=False, md_steps=args.md_steps, temperature=453.0,
                    device=args.device, precision=args.precision)
        s["seconds"] = time.perf_counter() - t
        s["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            s["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        print(json.dumps(s))


def machine() -> str:
    from gmx_dbm.devices import cpu_name
    return f"{cpu_name()}, {os.cpu_count()} cores"


SPLIT = [("Generate", "gen"), ("ProjectBonds", "proj"), ("RedrawDefects", "redraw"), ("RepairStereo", "stereo"),
         ("Thermalise", "md"), ("Polish", "polish")]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--gibbs", type=int, default=None)
    ap.add_argument("--orientations", type=int, default=None)
    ap.add_argument("--proposals", type=int, default=None)
    ap.add_argument("--md-steps", type=int, default=None, help="thermalisation steps (default: the card's)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    import torch
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") and torch.cuda.is_available() else None
    print(f"machine: {machine()}{'; GPU ' + gpu if gpu else ''}; torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads; device {args.device}, precision {args.precision}; "
          f"gibbs {args.gibbs}, orientations {args.orientations}, proposals {args.proposals}, "
          f"md steps {args.md_steps} (None: the model card's); model {args.model or 'default'}")
    head = f"{'atoms':>8} {'seconds':>9} {'atoms/s':>9} {'linear x':>8} {'peak RSS MB':>12}"
    head += f" {'peak GPU MB':>11}" if gpu else ""
    head += "".join(f" {short:>7}" for _, short in SPLIT)
    print(head)
    first = None
    for n in args.replicas:
        cmd = [sys.executable, __file__, "--one", str(n), "--threads", str(args.threads), "--device", args.device,
               "--precision", args.precision]
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
        per_atom = s["seconds"] / s["atoms"]
        first = first or per_atom
        row = (f"{s['atoms']:>8} {s['seconds']:>9.1f} {s['atoms'] / s['seconds']:>9.0f} {per_atom / first:>8.2f} "
               f"{s['peak_rss_mb']:>12.0f}")
        if gpu:
            row += f" {s.get('peak_gpu_mb', 0):>11.0f}"
        steps = s.get("step_seconds", {})
        row += "".join(f" {steps.get(name, 0.0):>7.1f}" for name, _ in SPLIT)
        print(row, flush=True)

if __name__ == "__main__":
    main()
