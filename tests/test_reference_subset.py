"""The project's own small sPS reference (tests/data/sps3: three 10-mer chains backmapped by gmx_dbm and
relaxed in GROMACS, written by scripts/make_test_reference.py): the core chain checked on real sPS
without the third-party data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.io import read_frame
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
SPS3 = ROOT / "tests" / "data" / "sps3"


@pytest.fixture(scope="module")
def sps3():
    if not (SPS3 / "aa.gro").is_file():
        pytest.skip("tests/data/sps3 not written (scripts/make_test_reference.py)")
    system = read_topology(SPS3 / "sps3.top")
    return system, read_frame(SPS3 / "aa.gro", n_atoms=system.n_atoms), read_frame(SPS3 / "cg.gro")


def test_subset_maps_to_its_cg_frame(sps3):
    from gmx_dbm.geometry import minimum_image
    from gmx_dbm.mapping import Mapper, read_mapping
    system, aa, cg = sps3
    mapped = Mapper(system, read_mapping([ROOT / "mappings" / "sps.map"], system)).map(aa)
    assert mapped.n_atoms == cg.n_atoms == 60
    assert np.abs(minimum_image(mapped.positions - cg.positions, cg.box)).max() <= 0.0011   # .gro rounding


def test_subset_is_syndiotactic_as_the_shipped_card_says(sps3):
    """Handedness of the 27 backbone CH centres learnt from the relaxed structure equals the shipped sps
    model's table (alternating along each chain)."""
    from gmx_dbm import stereo
    from gmx_dbm.backmap import shipped_model_path
    from gmx_dbm.model.card import ModelCard
    from gmx_dbm.model.checkpoint import read_model_meta
    system, aa, _ = sps3
    flat = system.flat()
    table = stereo.learn(flat, [(aa.positions, aa.box)])
    card = ModelCard.from_meta(read_model_meta(shipped_model_path("sps")))
    assert {int(k): v for k, v in table["PS1"].items()} == {int(k): v for k, v in card.stereo["PS1"].items()}
    signs = [table["PS1"][k] for k in sorted(table["PS1"])]
    assert all(a == -b for a, b in zip(signs, signs[1:]))


def test_subset_is_a_clean_structure(sps3):
    from gmx_dbm.ff.forcefield import ForceField
    from gmx_dbm.quality import StructureChecks, frame_report
    system, aa, _ = sps3
    flat = system.flat()
    rep = frame_report(flat, aa.positions, aa.box, ForceField(flat), StructureChecks(flat))
    assert rep["clashes"] == 0 and rep["deformed_rings"] == 0
    # angle energy per atom near the sPS melt's (2.9 kJ/mol at 568 K): relaxed, not strained
    assert 2.0 < rep["energy_per_atom"]["angle"] < 3.8


def test_subset_energies_equal_gromacs(sps3, gmx, tmp_path):
    from gmx_dbm.energy import compute_energies
    from gmx_dbm.ff.forcefield import GROMACS_TERMS, NonbondedSettings
    from gmx_dbm.gromacs import rerun_energies
    torch_e = compute_energies(SPS3 / "aa.gro", SPS3 / "sps3.top")["mean"]
    g = rerun_energies(SPS3 / "sps3.top", SPS3 / "aa.gro", tmp_path, settings=NonbondedSettings(), gmx=gmx)
    for key in ("bond", "angle", "proper", "improper", "lj_sr", "coulomb_sr"):
        want = float(np.sum([g[n][0] for n in GROMACS_TERMS[key] if n in g]))
        assert torch_e[key] == pytest.approx(want, rel=2e-3, abs=0.5), key
