"""Shared fixtures: where the reference data and GROMACS are. Skips always state their reason."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GMX_DBM_SHARED_DATA", ROOT.parent / "shared" / "data"))
GMX_PREFIX = Path(os.environ.get("GMX_DBM_GROMACS_PREFIX", "/opt/gmx_dbm/gromacs-2022.5-gmxapi"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "sps" / "topol.top").is_file():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set GMX_DBM_SHARED_DATA)")
    return SHARED_DATA


def find_gmx_binary():
    exe = os.environ.get("GMX_DBM_GMX")
    if exe:
        return exe
    if (GMX_PREFIX / "bin" / "gmx").is_file():
        return str(GMX_PREFIX / "bin" / "gmx")
    return shutil.which("gmx")


@pytest.fixture(scope="session")
def gmx() -> str:
    exe = find_gmx_binary()
    if exe is None:
        pytest.skip(f"GROMACS not found (no {GMX_PREFIX}/bin/gmx, no gmx on PATH); "
                    "run scripts/install_gromacs.sh")
    return exe
