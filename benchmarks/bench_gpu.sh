#!/usr/bin/env bash
# GPU benchmark of gmx_dbm, run as it is on a machine with an NVIDIA GPU and a CUDA build of PyTorch
# (no network needed): installs gmx_dbm from this working tree into a virtual environment that sees the
# system's packages, then
#   1. backmaps the shipped sPS example (5832 atoms) and boxes of it replicated 10x and 100x on the GPU
#      (benchmarks/bench_backmap.py: atoms/s, peak RSS, peak GPU memory, the per-step split),
#   2. the same with the generator in bf16 (--precision bf16) on the 10x box, with its quality report,
#   3. trains the large network for 200 steps on the GPU on frames backmapped in step 1 (samples/s).
# Everything it prints is also written to $OUT/bench_gpu.log (or benchmarks/bench_gpu.log).
# Usage: bash benchmarks/bench_gpu.sh [replicas...]     (default: 1 10 100); takes ~5-8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-benchmarks}/bench_gpu.log
REPLICAS=${*:-1 10 100}
exec > >(tee "$LOG") 2>&1
PY=${PYTHON:-python3}
echo "== machine"; date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"

echo "== install"
if [ ! -x .venv-gpu/bin/python ]; then "$PY" -m venv --system-site-packages .venv-gpu; fi
# the system's torch (CUDA) stays; gmx_dbm's other dependencies from a wheel folder if one was carried,
# else whatever the system has
if [ -d wheelhouse ]; then
  .venv-gpu/bin/python -m pip install -q --no-index --find-links wheelhouse -e . || \
    .venv-gpu/bin/python -m pip install -q --no-deps --no-build-isolation -e .
else
  .venv-gpu/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || true
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
.venv-gpu/bin/python -c "import gmx_dbm, numpy, scipy, networkx, parmed, MDAnalysis, safetensors; print('gmx_dbm', gmx_dbm.__version__)"
PYG=.venv-gpu/bin/python

echo "== 1. backmapping on cuda (default settings), replicas: $REPLICAS"
timeout 300 $PYG benchmarks/bench_backmap.py --device cuda --replicas $REPLICAS || echo "backmap benchmark failed or timed out"

echo "== 2. generator in bf16 vs fp32 on the 10x box (generator only: --md-steps 0)"
timeout 120 $PYG benchmarks/bench_backmap.py --device cuda --replicas 10 --md-steps 0 || true
timeout 120 $PYG benchmarks/bench_backmap.py --device cuda --replicas 10 --md-steps 0 --precision bf16 || true

echo "== 3. training, large network, 200 steps on cuda"
W=$(mktemp -d)
$PYG -m gmx_dbm -q backmap -c examples/sps/cg.gro -p topologies/sps.top -m mappings/sps.map -o "$W/aa.gro" \
  --device cuda --temperature 453
cat > "$W/train.toml" <<EOF
name = "bench_gpu"
output = "$W/run"
seed = 0
device = "cuda"
constraints = "all-bonds"
[[data]]
aa = "$W/aa.gro"
topology = "$PWD/topologies/sps.top"
mapping = "$PWD/mappings/sps.map"
[model]
size = "large"
[prior]
mode = "p2"
[train]
steps = 200
beads_per_batch = 256
critic_steps = 2
checkpoint_every = 1000
validate_every = 100000
log_every = 50
EOF
T0=$(date +%s.%N)
timeout 240 $PYG -m gmx_dbm train "$W/train.toml" --no-progress 2>&1 | tail -n 8 || echo "training failed or timed out"
T1=$(date +%s.%N)
$PYG - "$W/run" "$T0" "$T1" <<'EOF'
import json, sys, pathlib
run, t0, t1 = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
log = run / "train_log.jsonl"
rows = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
rate = [r.get("samples_per_s") for r in rows if r.get("samples_per_s")]
print(f"training wall time {t1 - t0:.1f} s (with start-up); samples/s in the log: {rate[-3:] if rate else 'n/a'}")
EOF
echo "== done"; date
