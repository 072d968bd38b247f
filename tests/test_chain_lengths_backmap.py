"""Backmapping sPS chains of other lengths with the shipped sps model (trained on 10-mers): a box of a
10-, a 3- and a 6-mer (tests/data/sps_mix, cut from a 453 K reference frame) comes back complete, with
every backbone centre in the syndiotactic pattern and no clashes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmx_dbm import stereo
from gmx_dbm.backmap import backmap
from gmx_dbm.io import read_frame
from gmx_dbm.mapping import map_trajectory, read_mapping
from gmx_dbm.quality import StructureChecks
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
MIX = ROOT / "tests" / "data" / "sps_mix"


@pytest.mark.slow
def test_sps_model_backmaps_three_chain_lengths(tmp_path):
    top, maps = MIX / "topol.top", [ROOT / "mappings" / "sps.map"]
    system = read_topology(top)
    cg = tmp_path / "cg.gro"
    map_trajectory(MIX / "aa.gro", system, read_mapping(maps, system), cg)
    out = tmp_path / "aa.gro"
    summary = backmap(cg, top, maps, out, model="sps", temperature=453, md_steps=100, progress=False)
    assert summary["frames"] == 1
    got, ref = read_frame(out), read_frame(MIX / "aa.gro")
    flat = system.flat()
    assert got.n_atoms == flat.n_atoms == 310 and list(got.atoms.names) == list(flat.names)
    chain = stereo.ChainCentres(flat)
    assert len(chain.centres) == 16
    # each chain in the pattern: relative handedness as the reference, the absolute one free per chain
    s_got = stereo.handedness(got.positions, got.box, chain.centres)
    s_ref = stereo.handedness(ref.positions, ref.box, chain.centres)
    mol = np.asarray(flat.mol_index)[chain.centres[:, 0]]
    for m in np.unique(mol):
        rel = s_got[mol == m] * s_ref[mol == m]
        assert len(set(rel.tolist())) == 1, f"chain {m}: centres out of the syndiotactic pattern"
    checks = StructureChecks(flat)
    assert checks.clashes(got.positions, got.box) == 0 and len(checks.deformed_rings(got.positions, got.box)) == 0
