#!/usr/bin/env bash
# Build GROMACS 2022.5 (Debian's source package) with gmxapi on, and the gmxapi Python package against it.
# Debian's binary package is built with GMXAPI=OFF, so gmxapi cannot be pip-installed against it
# (its CMake cache has GMXAPI=OFF). The build is cached at a fixed prefix and skipped when complete.
# Usage: scripts/install_gromacs.sh [PYTHON]   (PYTHON: the interpreter that gets gmxapi; default python3)
set -euo pipefail
PREFIX=${GMX_DBM_GROMACS_PREFIX:-/opt/gmx_dbm/gromacs-2022.5-gmxapi}
PY=$(command -v "${1:-python3}")
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
BUILD_ROOT=${GMX_DBM_GROMACS_BUILD:-/opt/gmx_dbm/build}
log() { echo "[install_gromacs] $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

if [ ! -f "$PREFIX/share/cmake/gmxapi/gmxapi-config.cmake" ] || [ ! -x "$PREFIX/bin/gmx" ]; then
  log "building GROMACS with gmxapi into $PREFIX (once; about 15-25 min on 2 cores)"
  if ! grep -q 'deb-src' /etc/apt/sources.list.d/debian.sources 2>/dev/null; then
    $SUDO sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dpkg-dev libfftw3-dev libopenmpi-dev cmake g++ make >/dev/null
  mkdir -p "$BUILD_ROOT"
  cd "$BUILD_ROOT"
  if [ ! -d gromacs-2022.5 ]; then
    apt-get source -qq gromacs=2022.5-2 >/dev/null
  fi
  SIMD=SSE4.1
  if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then SIMD=AVX2_256; fi
  mkdir -p gromacs-2022.5/build-gmxapi
  cd gromacs-2022.5/build-gmxapi
  cmake .. -DCMAKE_BUILD_TYPE=Release -DGMX_BUILD_OWN_FFTW=OFF -DGMX_FFT_LIBRARY=fftw3 \
    -DGMX_GPU=OFF -DGMX_MPI=OFF -DGMX_DOUBLE=OFF -DBUILD_TESTING=OFF -DGMX_BUILD_MANUAL=OFF \
    -DGMX_INSTALL_LEGACY_API=ON -DGMXAPI=ON -DGMX_SIMD=$SIMD -DCMAKE_INSTALL_PREFIX="$PREFIX" >/dev/null
  make -j"$(nproc)" >/dev/null
  make install >/dev/null
  log "GROMACS installed in $PREFIX"
else
  log "GROMACS with gmxapi already at $PREFIX"
fi

# The gmxapi wheel is tied to the prefix: build it from source, no cache.
if ! "$PY" -c 'import gmxapi, gmxapi._gmxapi' >/dev/null 2>&1; then
  log "building the gmxapi Python package against $PREFIX"
  "$PY" -m pip install -q "pybind11>=2.6" "cmake>=3.16" setuptools wheel "mpi4py" "networkx" "numpy" "packaging"
  # CMake must find this interpreter (and its mpi4py), not the first python3 on PATH
  PATH="$(dirname "$PY"):$PATH" Python3_ROOT_DIR="$(dirname "$(dirname "$PY")")" \
  gmxapi_ROOT="$PREFIX" "$PY" -m pip install -q --no-cache-dir --no-binary gmxapi --no-build-isolation gmxapi==0.4.2
fi
"$PY" -c 'import gmxapi, gmxapi._gmxapi; print("gmxapi", gmxapi.__version__)'
echo "$PREFIX/bin/gmx"
