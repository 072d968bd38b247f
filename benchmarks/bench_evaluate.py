#!/usr/bin/env python3
"""Speed of `gmx_dbm evaluate` on the sPS development set (78 frames x 5832 atoms per trajectory).

Usage: python benchmarks/bench_evaluate.py [--frames 78] [--threads N] [--data DIR]
Prints a table: stage, seconds per frame, seconds for all frames of one trajectory; then the whole
evaluate() of aa.xtc against deepbackmap.xtc (two trajectories read and analysed) with its wall time,
and the per-frame cost of backmap's quality flags (frame_report). Needs the shared reference data.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gmx_dbm import evaluate as E  # noqa: E402
from gmx_dbm.devices import cpu_name  # noqa: E402
from gmx_dbm.neighbors import periodic_pairs  # noqa: E402
from gmx_dbm.quality import frame_report  # noqa: E402
from gmx_dbm.io import read_frames  # noqa: E402
from gmx_dbm.topology import read_topology  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("GMX_DBM_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--frames", type=int, default=78)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    t453 = Path(args.data) / "sps" / "t453"
    if not (t453 / "aa.xtc").is_file():
        print(f"no reference data at {t453}", file=sys.stderr)
        return 1
    top = ROOT / "topologies" / "sps.top"
    system = read_topology(top)
    ev = E.Evaluator(system)
    frames = []
    t0 = time.perf_counter()
    for k, fr in enumerate(read_frames(t453 / "aa.xtc", n_atoms=ev.n)):
        if k >= args.frames:
            break
        frames.append(fr)
    t_read = time.perf_counter() - t0
    nf = len(frames)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {nf} frames x {ev.n} atoms")

    stages = {}

    cpu = {}

    def timed(name, fn):
        t, c = time.perf_counter(), time.process_time()
        for fr in frames:
            fn(fr)
        stages[name] = time.perf_counter() - t
        cpu[name] = time.process_time() - c

    st = ev.new_stats("bench", "bench")
    timed("bonded histograms", lambda fr: st.bonded[0].add(fr.positions, fr.box))
    pairs = {}
    timed("pair search (cell list, 1.0 nm)",
          lambda fr: pairs.__setitem__(id(fr), periodic_pairs(fr.positions, fr.box, ev.cutoff)))
    vol = {id(fr): abs(np.linalg.det(fr.box)) for fr in frames}
    timed("RDFs (all element pairs)", lambda fr: st.rdf[0].add(*pairs[id(fr)], vol[id(fr)]))
    timed("force-field energies (incl. own pair search)",
          lambda fr: ev.forcefield.energies(fr.positions, fr.box))
    timed("frame_report (backmap quality flags)",
          lambda fr: frame_report(ev.flat, fr.positions, fr.box, ev.forcefield, ev.checks))
    st2 = ev.new_stats("bench2", "bench2")
    timed("add_frame (everything evaluate does per frame)", lambda fr: ev.add_frame(st2, fr.positions, fr.box))
    stages["reading the .xtc"] = t_read
    cpu["reading the .xtc"] = float("nan")

    width = max(len(k) for k in stages) + 2
    print(f"\n{'stage':<{width}}{'s/frame':>10}{'s total':>10}{'CPU s':>10}")
    for k, v in stages.items():
        print(f"{k:<{width}}{v / nf:>10.3f}{v:>10.2f}{cpu[k]:>10.2f}")

    if nf == 78:
        t, c0 = time.perf_counter(), time.process_time()
        res = E.evaluate(t453 / "aa.xtc", [t453 / "deepbackmap.xtc"], top)
        wall, used = time.perf_counter() - t, time.process_time() - c0
        c = res["candidates"]["deepbackmap"]
        print(f"\nevaluate(aa.xtc vs deepbackmap.xtc, 2 x 78 frames, energies on): {wall:.1f} s wall, "
              f"{used:.1f} s CPU ({wall / 156:.2f} s wall per frame); angle JSD {c['angle_jsd']:.4f}, "
              f"RDF dev {c['rdf_dev']:.4f}; load after {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
