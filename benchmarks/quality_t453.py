"""Quality on the 453 K set: backmap CG frames of sps/t453 of the published sPS reference data set
($GMX_DBM_SHARED_DATA; default: shared/data beside the repository) with a model and score them against
the all-atom reference (pooled over all 78 reference frames) beside the published deepBackmap output and
the classical baseline, with the definitions of `gmx_dbm evaluate` (README, "Quality").

Usage: python benchmarks/quality_t453.py --model sps --frames 8 [--gibbs 4] [--orientations 1]
       [--proposals P] [--select-temperature 0] [--compare]   (--compare also scores the published and baseline outputs)
Other systems and CG models: --reference AA.xtc --cg CG.xtc --topology TOP --mapping MAP (e.g. the sPS
melt of three chain lengths of scripts/make_chain_mixture.py, or a CG model mapped with `gmx_dbm map`).
Prints the evaluate table and the backmapping time per frame.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GMX_DBM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="sps")
    ap.add_argument("--frames", type=int, default=8, help="CG frames to backmap, evenly spaced")
    ap.add_argument("--gibbs", type=int, default=None)
    ap.add_argument("--orientations", type=int, default=None)
    ap.add_argument("--select-temperature", type=float, default=None)
    ap.add_argument("--proposals", type=int, default=None)
    ap.add_argument("--proposal-sweeps", type=int, default=None)
    ap.add_argument("--md-steps", type=int, default=None, help="thermalisation steps (default: the card's)")
    ap.add_argument("--temperature", type=float, default=453.0, help="thermalisation temperature (the set's)")
    ap.add_argument("--first", type=int, default=0, help="use CG frames from this index on (a held-out split)")
    ap.add_argument("--constraints", default="auto")
    ap.add_argument("--stereo", default="auto", help="auto (the card's handedness table), none, or an all-atom template")
    ap.add_argument("--compare", action="store_true", help="also score deepbackmap.xtc and baseline.xtc")
    ap.add_argument("--out", default=None, help="keep the backmapped trajectory here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--reference", default=None, help="all-atom reference frames (default: sps/t453/aa.xtc)")
    ap.add_argument("--cg", default=None, help="CG frames to backmap (default: sps/t453/cg.xtc)")
    ap.add_argument("--topology", default=str(ROOT / "topologies" / "sps.top"))
    ap.add_argument("--mapping", nargs="+", default=[str(ROOT / "mappings" / "sps.map")])
    args = ap.parse_args()
    t453 = SHARED / "sps" / "t453"
    reference = Path(args.reference) if args.reference else t453 / "aa.xtc"
    cg = Path(args.cg) if args.cg else t453 / "cg.xtc"
    if not cg.is_file() or not reference.is_file():
        raise SystemExit(f"frames not found: {cg}, {reference} (shared data: {SHARED})")
    from gmx_dbm.backmap import backmap
    from gmx_dbm.evaluate import evaluate, format_table
    from gmx_dbm.io import count_frames
    n = count_frames(cg)
    pick = set(np.linspace(args.first, n - 1, args.frames).round().astype(int).tolist())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "gmx_dbm.xtc"
        t = time.perf_counter()
        s = backmap(cg, args.topology, args.mapping, out,
                    model=args.model, gibbs=args.gibbs, orientations=args.orientations, seed=0,
                    constraints=args.constraints, progress=False, frames=pick,
                    select_temperature=args.select_temperature, proposals=args.proposals, quality=False,
                    proposal_sweeps=args.proposal_sweeps, md_steps=args.md_steps, temperature=args.temperature,
                    stereo=args.stereo)
        dt = time.perf_counter() - t
        cands = [out] + ([t453 / "deepbackmap.xtc", t453 / "baseline.xtc"] if args.compare else [])
        res = evaluate(reference, cands, args.topology, plots=False, json_path=args.json)
    from gmx_dbm.devices import cpu_name
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores")
    print(f"reference {reference}, CG {cg}, topology {args.topology}, mapping {' '.join(args.mapping)}")
    print(f"model {args.model}: {s['frames']} frames, gibbs {args.gibbs}, orientations {args.orientations}, "
          f"proposals {args.proposals}, md steps {s['md_steps']} at {s['temperature']:g} K, "
          f"{dt / max(1, s['frames']):.1f} s/frame ({s['atoms_per_s']:.0f} atoms/s)")
    print(format_table(res))


if __name__ == "__main__":
    main()
