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


# ------------------------------------------------------------------------------------------- tacticity
@pytest.fixture(scope="module")
def sps3(root):
    d = root / "tests" / "data" / "sps3"
    flat = read_topology(d / "sps3.top").flat()
    fr = read_frame(d / "aa.gro")
    return flat, fr.positions, fr.box


def test_chain_centres_are_oriented_along_the_chain(sps):
    ch = stereo.ChainCentres(sps)
    base = stereo.find_centres(sps)
    assert len(ch.centres) == len(base) == 36 * 9
    assert len(ch.pairs) == 36 * 8          # consecutive backbone centres, two bonds apart
    types = np.asarray(sps.types)
    # prev and next are backbone carbons, side the ring's ipso carbon
    assert set(types[ch.centres[:, 1]]) == {"C"} and set(types[ch.centres[:, 3]]) == {"C"}
    assert set(types[ch.centres[:, 2]]) == {"C_AR"}
    assert (ch.centres[:, 1] < ch.centres[:, 0]).all()
    # the chain's first centre is its own kind; all others are inner ones
    assert len(set(ch.kinds)) == 2 and len(set(ch.kinds[::9])) == 1


def test_tacticity_of_syndiotactic_frames_alternates(sps3):
    flat, x, box = sps3
    tac = stereo.merge_tacticity([stereo.learn_tacticity(flat, [(x, box)])])
    assert set(tac["relations"].values()) == {-1} and sum(sum(c) for c in tac["counts"].values()) == 3 * 8
    assert stereo.describe_tacticity(tac).startswith("syndiotactic")
    # a mirrored frame has the same relative pattern: absolute handedness is not part of tacticity
    assert stereo.learn_tacticity(flat, [(-x, box)])["counts"] == tac["counts"]


def test_pattern_targets_follow_each_chains_majority(sps3):
    flat, x, box = sps3
    tac = stereo.merge_tacticity([stereo.learn_tacticity(flat, [(x, box)])])
    pt = stereo.PatternTargets(stereo.ChainCentres(flat), tac["relations"])
    assert pt.n_chains == 3 and len(pt.centres) == 27
    ref = stereo.handedness(x, box, pt.centres)
    assert np.array_equal(pt.signs(x, box), ref)
    # chain 2 mirrored as a whole: its targets follow it, the other chains keep theirs
    y = np.array(x)
    chain2 = np.asarray(flat.mol_index) == 1
    y[chain2] = -y[chain2]
    s = pt.signs(y, box)
    in2 = chain2[pt.centres[:, 0]]
    assert np.array_equal(s[in2], -ref[in2]) and np.array_equal(s[~in2], ref[~in2])
    # one centre inverted: the chain's majority wins, so that centre is the one to repair
    y, _ = stereo.repair(x, box, pt.centres[4:5], -ref[4:5])
    s = pt.signs(y, box)
    assert np.array_equal(s, ref) and (stereo.handedness(y, box, pt.centres) != s).sum() == 1


def test_atactic_data_gives_no_pattern(sps3):
    flat, x, box = sps3
    ch = stereo.ChainCentres(flat)
    y, _ = stereo.repair(x, box, ch.centres[::2], -stereo.handedness(x, box, ch.centres[::2]))
    tac = stereo.merge_tacticity([stereo.learn_tacticity(flat, [(x, box), (y, box)], ch)])
    assert tac["relations"] == {} and stereo.describe_tacticity(tac).startswith("atactic")


def test_pattern_covers_other_chain_lengths(root, sps3):
    """The pattern learnt on 10-mers applies to the 3-, 6- and 10-mers cut from them."""
    flat10, x, box = sps3
    tac = stereo.merge_tacticity([stereo.learn_tacticity(flat10, [(x, box)])])
    d = root / "tests" / "data" / "sps_mix"
    flat = read_topology(d / "topol.top").flat()
    fr = read_frame(d / "aa.gro")
    pt = stereo.PatternTargets(stereo.ChainCentres(flat), tac["relations"])
    assert len(pt.centres) == 9 + 2 + 5 and pt.n_chains == 3 and pt.n_unknown_pairs == 0
    # the cut chains are syndiotactic pieces of the reference: the targets are their handedness
    assert np.array_equal(pt.signs(fr.positions, fr.box), stereo.handedness(fr.positions, fr.box, pt.centres))


def _three_mer(root, sps3):
    """The sps_mix frame, its CG beads, and pattern targets with the CG relation learnt on it."""
    from gmx_dbm.mapping import Mapper, read_mapping
    d = root / "tests" / "data" / "sps_mix"
    system = read_topology(d / "topol.top")
    flat = system.flat()
    smap = read_mapping([root / "mappings" / "sps.map"], system)
    fr = read_frame(d / "aa.gro")
    beads = Mapper(system, smap).map(fr).positions
    mflat = smap.flat()
    chain = stereo.ChainCentres(flat)
    triples = stereo.cg_triples(chain.centres, mflat.atom_bead, mflat.bead_types, mflat.cg_bonds)
    assert (triples[:, 0] >= 0).sum() == 16 - 3     # every centre but the first of each chain
    tac = stereo.merge_tacticity([stereo.learn_tacticity(flat, [(fr.positions, fr.box, beads)], chain, triples)])
    agree, disagree = tac["cg"]
    cg_sign = 1 if agree > disagree else -1
    pt = stereo.PatternTargets(chain, tac["relations"], triples, cg_sign)
    three = np.flatnonzero(np.asarray(flat.mol_type)[np.asarray(flat.mol_index)[pt.centres[:, 0]]] == "PS3")
    assert len(three) == 2
    s_cg = cg_sign * stereo.cg_handedness(pt.triples, beads, fr.box)[three] * pt.relative[three]
    assert s_cg.sum() != 0
    return fr, beads, chain, tac, triples, cg_sign, pt, three, (1 if s_cg.sum() > 0 else -1)


def _towards_plane(x, centres, fraction):
    """Move each centre atom ``fraction`` of the way to the centroid of its three heavy neighbours (the
    same side of their plane: the handedness is kept, the signed volume shrinks)."""
    y = np.array(x)
    for c in centres:
        y[c[0]] += fraction * (y[c[1:4]].mean(0) - y[c[0]])
    return y


def test_cg_beads_break_a_tie_of_a_short_chain(root, sps3):
    """A chain whose centres are too flat to vote takes the assignment the CG beads favour."""
    fr, beads, chain, tac, triples, cg_sign, pt, three, want = _three_mer(root, sps3)
    y = _towards_plane(fr.positions, pt.centres[three], 1.0)
    assert np.abs(stereo.signed_volumes(y, fr.box, pt.centres[three])).sum() < stereo.TIE_VOTE
    got = pt.signs(y, fr.box, beads=beads)[three]
    assert np.array_equal(got, want * pt.relative[three])
    flipped = stereo.PatternTargets(chain, tac["relations"], triples, -cg_sign)
    assert np.array_equal(flipped.signs(y, fr.box, beads=beads)[three], -got)


def test_a_clearly_formed_centre_outweighs_a_nearly_flat_one(root, sps3):
    """One 3-mer centre generated each way: the chain follows the clearly tetrahedral one, not the CG
    beads (which here favour the nearly flat one)."""
    fr, beads, chain, tac, triples, cg_sign, pt, three, want = _three_mer(root, sps3)
    ref = stereo.handedness(fr.positions, fr.box, pt.centres)
    # invert one centre, so the chain's two centres disagree, then flatten the one the CG beads agree with
    y, _ = stereo.repair(fr.positions, fr.box, pt.centres[three[:1]], -ref[three[:1]])
    s = stereo.handedness(y, fr.box, pt.centres[three]) * pt.relative[three]   # each centre's assignment
    assert sorted(s.tolist()) == [-1, 1]
    weak = three[s == want]
    y = _towards_plane(y, pt.centres[weak], 0.8)
    vol = stereo.signed_volumes(y, fr.box, pt.centres[three])
    assert np.abs(vol[s == want]).sum() < 0.5 * np.abs(vol[s != want]).sum()
    assert np.array_equal(pt.signs(y, fr.box, beads=beads)[three], -want * pt.relative[three])