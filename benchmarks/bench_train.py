"""Training throughput (samples/s) of the compact and large networks on this machine's CPU.

Usage: python benchmarks/bench_train.py [--steps 6] [--sizes compact large]
Needs the published sPS reference data set ($GMX_DBM_SHARED_DATA; default: shared/data beside the
repository). Prints a table.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GMX_DBM_SHARED_DATA", ROOT.parent / "shared" / "data"))

CONFIG = """
name = "bench"
output = "{out}"
seed = 0
[[data]]
aa = "{shared}/sps/t568_train/aa.xtc"
cg = "{shared}/sps/t568_train/cg.xtc"
topology = "{root}/topologies/sps.top"
mapping = "{root}/mappings/sps.map"
frames = "0:2"
[model]
size = "{size}"
[prior]
mode = "p2"
[train]
steps = 1000
beads_per_batch = {beads}
critic_steps = {critic}
checkpoint_every = 100000
validate_every = 100000
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--sizes", nargs="+", default=["compact", "large"])
    ap.add_argument("--beads", type=int, default=24)
    ap.add_argument("--critic-steps", type=int, default=3)
    args = ap.parse_args()
    if not (SHARED / "sps" / "t568_train" / "aa.xtc").is_file():
        raise SystemExit(f"shared data not found at {SHARED}")
    import torch

    from gmx_dbm.train.config import resolve_config
    from gmx_dbm.train.loop import Trainer
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'size':>8} {'params G':>9} {'samples/step':>13} {'s/step':>8} {'samples/s':>10}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "c.toml"
            cfg.write_text(CONFIG.format(out=tmp, shared=SHARED, root=ROOT, size=size, beads=args.beads,
                                         critic=args.critic_steps))
            tr = Trainer(resolve_config(cfg))
            tr.train_step()  # warm-up
            t = time.perf_counter()
            n = sum(tr.train_step()["samples"] for _ in range(args.steps))
            dt = time.perf_counter() - t
            params = sum(p.numel() for p in tr.gen.parameters())
            print(f"{size:>8} {params:>9} {n / args.steps:>13.0f} {dt / args.steps:>8.2f} {n / dt:>10.1f}")


if __name__ == "__main__":
    main()
