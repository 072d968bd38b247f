#!/usr/bin/env python3
"""Memory of `gmx_dbm backmap` on a long CG trajectory: is it flat in the number of frames?

Usage:
  python benchmarks/bench_memory.py                         # toy system, 1000 frames
  python benchmarks/bench_memory.py --frames 10000          # longer
  python benchmarks/bench_memory.py --system sps --frames 20   # the sPS example (720 beads, 5832 atoms);
                                                            # needs the shared data to train the model
  python benchmarks/bench_memory.py --model M.safetensors --cg CG.gro --top AA.top --map A.map --frames 50

It trains a tiny model (a few steps: the weights do not matter for memory), writes a CG .xtc that repeats
one CG frame N times, and backmaps it with ``--gibbs 0`` (``--gibbs`` to change) in a fresh process
that records its resident set size after frames 1, 2, 5, 10, 20, 50, 100, ... and after the last one.
Prints a table: frames done, peak RSS (VmHWM), current RSS (VmRSS), seconds so far. Flat memory means
the peak after N frames equals the peak after 100.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))  # tests/toy.py: the tiny-model training config of the tests
from toy import map_toy_cg, toy_config  # noqa: E402


def _proc_status_kib(key: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    import resource
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # Linux: KiB; peak only


def child(args) -> None:
    """Backmap in this process; report RSS after chosen frame counts as JSON lines on stdout."""
    import torch

    import gmx_dbm.backmap as bm_mod
    torch.set_num_threads(args.threads)
    marks = {args.frames}
    k = 1
    while k < args.frames:
        marks.update(m for m in (k, 2 * k, 5 * k) if m < args.frames)
        k *= 10
    t0 = time.perf_counter()
    done = [0]
    rows = []
    original = bm_mod.Backmapper.frame

    def frame(self, *a, **kw):
        out = original(self, *a, **kw)
        done[0] += 1
        if done[0] in marks:
            rows.append({"frames": done[0], "peak_mib": _proc_status_kib("VmHWM") / 1024,
                         "rss_mib": _proc_status_kib("VmRSS") / 1024, "seconds": time.perf_counter() - t0})
        return out

    bm_mod.Backmapper.frame = frame
    rows.append({"frames": 0, "peak_mib": _proc_status_kib("VmHWM") / 1024,
                 "rss_mib": _proc_status_kib("VmRSS") / 1024, "seconds": 0.0})
    bm_mod.backmap(args.cg, args.top, args.map, args.out, model=args.model, gibbs=args.gibbs, seed=1,
                   progress=False)
    print(json.dumps(rows))


def make_inputs(args, work: Path):
    """-> (model, CG frame .gro, topology, mapping, atoms per frame)."""
    if args.system == "toy":
        data = ROOT / "tests" / "data"
        top, mp = data / "toy.top", data / "toy.map"
        cg = map_toy_cg(work / "toy_cg.gro")
        aa_train, cg_train = data / "toy.gro", cg
    elif args.system == "sps":
        shared = Path(os.environ.get("GMX_DBM_SHARED_DATA", ROOT.parent / "shared" / "data"))
        src = shared / "sps" / "t568_train"
        if not (src / "aa.xtc").is_file():
            sys.exit(f"bench_memory: the sPS model is trained on {src} (not found; set GMX_DBM_SHARED_DATA)")
        top, mp = ROOT / "topologies" / "sps.top", ROOT / "mappings" / "sps.map"
        cg = ROOT / "examples" / "sps" / "cg.gro"
        aa_train, cg_train = src / "aa.xtc", src / "cg.xtc"
    else:
        return Path(args.model), Path(args.cg), Path(args.top), Path(args.map)
    if args.model:
        return Path(args.model), cg, top, mp
    cfg = toy_config(work / "tiny.toml", work / "run", cg_train, name="bench-memory", aa=aa_train, top=top, map=mp,
                     frames="0:2", resolution=args.resolution, steps=2, checkpoint_every=2, log_every=None)
    from gmx_dbm.train.loop import train
    return train(cfg, progress=False), cg, top, mp


def torch_version() -> str:
    import torch
    return torch.__version__


def repeat_to_xtc(cg: Path, n: int, out: Path) -> None:
    import numpy as np

    from gmx_dbm.io import Frame, open_writer, read_frame
    fr = read_frame(cg)
    with open_writer(out, fr.atoms) as w:
        for i in range(n):
            w.write(Frame(fr.positions, np.asarray(fr.box), time=float(i), step=i))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", default="toy", choices=["toy", "sps", "custom"])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--gibbs", type=int, default=0)
    p.add_argument("--resolution", type=int, default=4, help="grid resolution of the tiny model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model")
    p.add_argument("--cg")
    p.add_argument("--top")
    p.add_argument("--map")
    p.add_argument("--out")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.system == "custom" and not all([args.model, args.cg, args.top, args.map]):
        p.error("--system custom needs --model, --cg, --top and --map")

    import logging
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(tmp)
        model, cg, top, mp = make_inputs(args, work)
        traj = work / "cg_long.xtc"
        repeat_to_xtc(cg, args.frames, traj)
        out = work / "aa_long.xtc"
        cmd = [sys.executable, __file__, "--child", "--frames", str(args.frames), "--gibbs", str(args.gibbs),
               "--threads", str(args.threads), "--model", str(model), "--cg", str(traj), "--top", str(top),
               "--map", str(mp), "--out", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            sys.exit(f"bench_memory: backmap failed:\n{res.stderr}")
        rows = json.loads(res.stdout.strip().splitlines()[-1])
        size = out.stat().st_size
    from gmx_dbm.topology import read_topology
    n_atoms = read_topology(top).flat().n_atoms

    import platform
    cpu = platform.processor() or platform.machine()
    print(f"# gmx_dbm backmap memory: system {args.system}, {args.frames} frames of {cg.name} "
          f"({n_atoms} atoms each), --gibbs {args.gibbs}, {args.threads} thread(s), {os.cpu_count()} CPUs "
          f"({cpu}), python {platform.python_version()}, torch {torch_version()}")
    print(f"# output .xtc: {size / 2**20:.1f} MiB")
    print(f"{'frames done':>12} {'peak RSS MiB':>13} {'RSS MiB':>9} {'seconds':>9} {'s/frame':>8}")
    for r in rows:
        per = r["seconds"] / r["frames"] if r["frames"] else float("nan")
        print(f"{r['frames']:>12d} {r['peak_mib']:>13.1f} {r['rss_mib']:>9.1f} {r['seconds']:>9.1f} {per:>8.3f}")
    after = {r["frames"]: r["peak_mib"] for r in rows}
    if 100 in after and args.frames > 100:
        print(f"# peak RSS growth from frame 100 to frame {args.frames}: "
              f"{after[args.frames] - after[100]:+.1f} MiB")


if __name__ == "__main__":
    main()
