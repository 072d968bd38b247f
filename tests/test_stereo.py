"""Stereochemistry (``gmx_dbm.stereo``): centres of the sPS topology, handedness, learning it from frames,
and inverting wrong centres back without changing their bonds."""
from __future__ import annotations

import numpy as np
import pytest

from gmx_dbm import stereo
from gmx_dbm.io import read_frame
from gmx_dbm.topology import read_topology


@pytest.fixture(scope="module")
def sps(root):
    return read_topology(root / "topologies" / "sps.top").flat()


def test_backbone_ch_centres_of_sps(sps):
    c = stereo.find_centres(sps)
    # 36 chains x 10 monomers: 9 backbone CH per chain have three heavy neighbours (one chain end differs)
    assert len(c) == 36 * 9
    types = np.asarray(sps.types)
    assert set(types[c[:, 0]]) == {"C"} and set(types[c[:, 4]]) == {"H"}
    assert all("C_AR" in set(types[row[1:4]]) for row in c)


def _tetrahedron():
    # centre at the origin, three heavy neighbours and a hydrogen at tetrahedral directions, in a 3 nm box
    d = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3)
    x = np.vstack([[1.5, 1.5, 1.5], 1.5 + 0.15 * d[:3], 1.5 + 0.11 * d[3]])
    return x, np.diag([3.0, 3.0, 3.0]), np.array([[0, 1, 2, 3, 4]])


def test_repair_inverts_only_wrong_centres_and_keeps_bonds():
    x, box, c = _tetrahedron()
    s = stereo.handedness(x, box, c)
    assert s.tolist() in ([1], [-1])
    same, n = stereo.repair(x, box, c, s)
    assert n == 0 and np.array_equal(same, x)
    y, n = stereo.repair(x, box, c, -s)
    assert n == 1 and stereo.handedness(y, box, c).tolist() == (-s).tolist()
    for k in (1, 2, 3):
        assert np.linalg.norm(y[k] - y[0]) == pytest.approx(np.linalg.norm(x[k] - x[0]), abs=1e-12)
    assert np.linalg.norm(y[4] - y[0]) == pytest.approx(0.11, abs=1e-12)
    assert np.array_equal(y[1:4], x[1:4])


def test_repair_across_the_periodic_boundary():
    x, box, c = _tetrahedron()
    x = x - 1.5  # centre at the origin: neighbours on both sides of the box edges
    x = x - np.floor(x / 3.0) * 3.0
    s = stereo.handedness(x, box, c)
    y, n = stereo.repair(x, box, c, -s)
    assert n == 1 and stereo.handedness(y, box, c).tolist() == (-s).tolist()


def test_learn_and_targets_from_frames(sps, root):
    fr = read_frame(root / "examples" / "sps" / "cg.gro")  # a CG frame: only its box is used here
    rng = np.random.default_rng(0)
    per = sps.n_atoms // 36  # every chain gets the same random coordinates, shifted
    pos = np.tile(rng.normal(scale=0.3, size=(per, 3)), (36, 1)) + np.repeat(rng.uniform(0, 3, (36, 3)), per, 0)
    table = stereo.learn(sps, [(pos, fr.box)])
    c = stereo.find_centres(sps)
    assert set(table) == {"PS1"}
    centres, signs = stereo.targets(sps, table)
    assert len(centres) == len(c)
    assert np.array_equal(signs, stereo.handedness(pos, fr.box, centres))
    # a second frame with every centre mirrored: no centre has one handedness, nothing is learnt
    assert stereo.learn(sps, [(pos, fr.box), (-pos, fr.box)]) == {}
    # tables from two data sets that disagree on one centre drop it
    t2 = {"PS1": dict(table["PS1"])}
    k = next(iter(t2["PS1"]))
    t2["PS1"][k] = -t2["PS1"][k]
    merged = stereo.merge([table, t2])
    assert k not in merged["PS1"] and len(merged["PS1"]) == len(table["PS1"]) - 1


def test_hydrogen_on_the_heavy_side_is_put_opposite():
    x, box, c = _tetrahedron()
    assert not stereo.hydrogens_inside(x, box, c).any()
    same, n = stereo.place_hydrogens(x, box, c)
    assert n == 0 and np.array_equal(same, x)
    # hydrogen pushed through to the heavy atoms' side (as the generator sometimes leaves it)
    bad = x.copy()
    bad[4] = x[0] - 0.8 * (x[4] - x[0])
    assert stereo.hydrogens_inside(bad, box, c).tolist() == [True]
    y, n = stereo.place_hydrogens(bad, box, c)
    assert n == 1 and not stereo.hydrogens_inside(y, box, c).any()
    assert np.linalg.norm(y[4] - y[0]) == pytest.approx(np.linalg.norm(bad[4] - bad[0]), abs=1e-12)
    # on a regular tetrahedron "opposite the heavy atoms" is exactly where the hydrogen was
    assert np.allclose(_unit(y[4] - y[0]), _unit(x[4] - x[0]), atol=1e-9)
    assert np.array_equal(y[:4], bad[:4])


def test_place_hydrogens_across_the_periodic_boundary():
    x, box, c = _tetrahedron()
    x[4] = x[0] - (x[4] - x[0])
    x = x - 1.5
    x = x - np.floor(x / 3.0) * 3.0
    y, n = stereo.place_hydrogens(x, box, c)
    assert n == 1 and not stereo.hydrogens_inside(y, box, c).any()
    d = y[4] - y[0]
    d -= np.round(d / 3.0) * 3.0
    assert np.linalg.norm(d) == pytest.approx(0.11, abs=1e-12)


def _unit(v):
    return v / np.linalg.norm(v)
