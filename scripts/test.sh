#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them:
#   a virtual environment (.venv) with gmx_dbm and its dependencies (torch pinned to the CPU build),
#   GROMACS 2022.5 with gmxapi at a fixed prefix (built once, ~15-25 min, then cached), gmxapi for .venv.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
bash scripts/install_gromacs.sh .venv/bin/python
export GMX_DBM_GROMACS_PREFIX=${GMX_DBM_GROMACS_PREFIX:-/opt/gmx_dbm/gromacs-2022.5-gmxapi}
exec .venv/bin/python -m pytest -q -ra "$@"
