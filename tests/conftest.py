"""Shared fixtures: where the reference data and GROMACS are. Skips always state their reason."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gmx_dbm.devices import pin_cpu_kernels

# the kernels `gmx_dbm train` uses, set before any test's first tensor operation: the retrained prefixes
# of the shipped runs are compared to the bit's neighbourhood (tests/test_model_provenance.py)
pin_cpu_kernels()

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


@pytest.fixture(scope="module")
def restore_torch_threads():
    """Training configs (``threads = 1``) and ``--threads`` set torch's global thread count: leave it as
    this module found it. Modules that train or backmap use it with
    ``pytestmark = pytest.mark.usefixtures("restore_torch_threads")``."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def toy_cg(tmp_path_factory) -> Path:
    """tests/data/toy.gro mapped to CG (read-only: tests write next to it, never into it)."""
    from toy import map_toy_cg
    return map_toy_cg(tmp_path_factory.mktemp("toy_cg") / "toy_cg.gro")


def pytest_collection_modifyitems(config, items):
    """Every test that asks for GROMACS (the ``gmx`` fixture, directly or through another fixture) is
    marked ``gromacs``, so that ``-m "not gromacs"`` selects the tests that run without it."""
    for item in items:
        if "gmx" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gromacs)
