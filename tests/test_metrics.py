"""Structure metrics on synthetic cases with known answers (no reference data needed)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from gmx_dbm import metrics
from gmx_dbm.geometry import box_heights
from gmx_dbm.neighbors import periodic_pairs
from gmx_dbm.geometry import minimum_image


def _triplets(angles_deg):
    """Atom triplets (3 atoms each) with exactly the given angles i-j-k, far apart in a big box."""
    pos = []
    for n, a in enumerate(np.radians(angles_deg)):
        c = np.array([1.0 + (n % 10) * 1.5, 1.0 + (n // 10) * 1.5, 5.0])
        pos += [c + [0.15, 0, 0], c, c + 0.15 * np.array([np.cos(a), np.sin(a), 0.0])]
    return np.array(pos)


BIG_BOX = np.diag([20.0, 20.0, 20.0])


def test_jsd_basics():
    p = np.array([1.0, 2.0, 3.0, 0.0])
    assert metrics.jsd(p, p) == 0.0
    assert metrics.jsd(p, 10 * p) == pytest.approx(0.0, abs=1e-15)  # normalised
    assert metrics.jsd([1, 0], [0, 1]) == pytest.approx(np.log(2))   # natural log, disjoint
    assert np.isnan(metrics.jsd([0, 0], [1, 0]))


def test_shifted_angle_distribution_has_the_analytic_jsd():
    # uniform over 10 one-degree bins vs the same shifted by 5 bins: half overlap
    # KL(p||m) = 5 * 0.1 * ln(0.1 / 0.05) (overlap bins contribute 0) -> JSD = ln(2) / 2
    a = np.arange(100.5, 110.5, 1.0)
    idx = np.arange(30).reshape(10, 3)
    ref = metrics.angles_deg(_triplets(a)[None], BIG_BOX[None], idx)
    shifted = metrics.angles_deg(_triplets(a + 5.0)[None], BIG_BOX[None], idx)
    assert ref[0] == pytest.approx(a)
    j = metrics.jsd(metrics.histogram("angle", ref), metrics.histogram("angle", shifted))
    assert j == pytest.approx(0.5 * np.log(2), rel=1e-12)
    assert metrics.jsd(metrics.histogram("angle", ref), metrics.histogram("angle", ref)) == 0.0


def test_type_key_canonical():
    assert metrics.type_key("bond", ["C_AR", "C"]) == metrics.type_key("bond", ["C", "C_AR"]) == "C-C_AR"
    assert metrics.type_key("angle", ["H", "C", "C_AR"]) == "C_AR-C-H"
    assert metrics.type_key("proper", ["H", "C", "C", "C_AR"]) == "C_AR-C-C-H"
    assert metrics.type_key("improper", ["H", "C", "C", "C_AR"]) == "H-C-C-C_AR"  # order kept
    labels, group = metrics.type_groups("bond", np.array([[0, 1], [1, 0], [1, 2]]), ["C", "H", "C"])
    assert labels == ["C-H"] and list(group) == [0, 0, 0]


def _brute_pairs(pos, box, cutoff):
    n = len(pos)
    i, j = np.triu_indices(n, 1)
    d = np.linalg.norm(minimum_image(pos[j] - pos[i], box), axis=-1)
    keep = d < cutoff
    return set(zip(i[keep].tolist(), j[keep].tolist())), d[keep]


@pytest.mark.parametrize("box", [
    np.diag([2.1, 2.3, 2.5]),
    np.array([[2.4, 0, 0], [-0.9, 2.2, 0], [0.7, -0.8, 2.3]]),   # skewed triclinic
    np.array([[10.13, 0, 0], [-1.17, 2.26, 0], [0, 0, 2.73]]),   # the sPS box shape
])
def test_periodic_pairs_match_brute_force(box):
    rng = np.random.default_rng(1)
    pos = rng.uniform(-3, 6, size=(300, 3))  # partly outside the box on purpose
    cutoff = 0.45 * box_heights(box).min()
    i, j, d = periodic_pairs(pos, box, cutoff)
    want, dist = _brute_pairs(pos, box, cutoff)
    got = set(zip(i.tolist(), j.tolist()))
    assert got == want and len(i) == len(got)
    assert np.all(i < j)
    assert np.sort(d) == pytest.approx(np.sort(dist))


def test_periodic_pairs_refuse_ambiguous_minimum_image():
    with pytest.raises(ValueError, match="half the smallest box height"):
        periodic_pairs(np.zeros((2, 3)), np.diag([1.0, 1.0, 1.0]), 0.6)


def test_rdf_of_a_simple_cubic_lattice():
    a, m = 0.2037, 10  # no lattice distance on a bin edge
    box = np.diag([a * m] * 3)
    pos = np.array(list(itertools.product(range(m), repeat=3)), dtype=float) * a + 0.01
    n = len(pos)
    acc = metrics.RDFAccumulator(np.array(["C"] * n), np.zeros(0, dtype=np.int64))
    i, j, d = periodic_pairs(pos, box, metrics.RDF_RMAX)
    acc.add(i, j, d, float(np.linalg.det(box)))
    g = acc.g()["C-C"]
    rho = n / np.linalg.det(box)
    neighbours = g * rho * acc.shell       # per atom, per bin
    shells = {1: 6, 2: 12, 3: 8, 4: 6, 5: 24, 6: 24, 8: 12, 9: 30}  # |n|^2 -> count on a cubic lattice
    for n2, count in shells.items():
        r = a * np.sqrt(n2)
        k = int(r / metrics.RDF_DR)
        assert neighbours[k] == pytest.approx(count), (n2, r)
    assert neighbours[: int(a / metrics.RDF_DR)].sum() == 0
    # every bin without a lattice distance is empty
    expected = np.zeros_like(neighbours)
    for v in itertools.product(range(-4, 5), repeat=3):
        r = a * np.sqrt(np.dot(v, v))
        if 0 < r < metrics.RDF_RMAX:
            assert abs(r / metrics.RDF_DR - round(r / metrics.RDF_DR)) > 1e-3
            expected[int(r / metrics.RDF_DR)] += 1
    assert neighbours == pytest.approx(expected)
    assert metrics.rdf_deviation(g, g) == 0.0
    assert metrics.rdf_deviation(g, g + 1.0) == pytest.approx(acc.nbins * metrics.RDF_DR)


def test_rdf_exclusions_and_element_pairs():
    # two atoms 0.3 nm apart, bonded (excluded) or not; types C and H
    box = np.diag([3.0, 3.0, 3.0])
    pos = np.array([[1.0, 1.0, 1.0], [1.3, 1.0, 1.0]])
    excl = metrics.pairs_within_bonds([[0, 1]], 2, 3)
    for keys, expect in ((excl, 0.0), (np.zeros(0, dtype=np.int64), 1.0)):
        acc = metrics.RDFAccumulator(np.array(["C", "H"]), keys)
        acc.add(*periodic_pairs(pos, box, 0.8), 27.0)
        g = acc.g()
        assert set(g) == {"C-C", "C-H", "H-H"}
        vol = acc.shell[30]
        assert g["C-H"][30] == pytest.approx(expect / (1 * 1 / 27.0 * vol))
        assert g["C-C"].sum() == 0


def test_pairs_within_bonds():
    chain = [[k, k + 1] for k in range(5)]  # 6 atoms in a row
    keys = metrics.pairs_within_bonds(chain, 6, 3)
    pairs = {(int(k) // 6, int(k) % 6) for k in keys}
    assert pairs == {(i, j) for i in range(6) for j in range(i + 1, 6) if j - i <= 3}
    assert metrics.in_keys(np.array([0, 0]), np.array([3, 4]), 6, keys).tolist() == [True, False]
    # ring: 0-1-2-3-4-5-0, all pairs within 3 bonds
    ring = chain + [[5, 0]]
    assert len(metrics.pairs_within_bonds(ring, 6, 3)) == 15


def test_in_keys_where_restricts_lookups():
    keys = metrics.pair_keys([[0, 1], [2, 3]], 4)
    i, j = np.array([0, 2, 1]), np.array([1, 3, 2])
    assert metrics.in_keys(i, j, 4, keys).tolist() == [True, True, False]
    assert metrics.in_keys(i, j, 4, keys, where=np.array([True, False, True])).tolist() == [True, False, False]


def test_lj_kernel_and_per_molecule_and_clashes():
    import torch
    from gmx_dbm.ff.functional import lj_pair
    sig, eps = 0.3, 0.5
    c6, c12 = 4 * eps * sig ** 6, 4 * eps * sig ** 12
    r = torch.tensor([sig, 2 ** (1 / 6) * sig, 0.5, 1.1], dtype=torch.float64)
    v, f = lj_pair(r * r, c6, c12, cutoff=1.0, shift=False)
    assert float(v[0]) == pytest.approx(0.0, abs=1e-12) and float(v[1]) == pytest.approx(-eps)
    assert float(f[1]) == pytest.approx(0.0, abs=1e-9)   # no force at the minimum
    assert float(v[3]) == 0.0 and float(f[3]) == 0.0     # beyond the cut-off
    vs, fs = lj_pair(r * r, c6, c12, cutoff=1.0, shift=True)
    rc = torch.tensor([1.0], dtype=torch.float64)
    assert float(vs[2]) == pytest.approx(float(v[2]) - float(lj_pair(rc * rc * 0.999999, c6, c12, 1.0, False)[0][0]), rel=1e-5)
    assert torch.equal(fs, f)                            # potential-shift leaves the forces alone
    # 3 atoms: 0, 1 in molecule 0; 2 in molecule 1
    i, j, e = np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([-1.0, -2.0, -4.0])
    per = metrics.per_molecule(i, j, e, np.array([0, 0, 1]), 2)
    assert per.tolist() == [-7.0, -6.0]
    d = np.array([0.05, 0.09, 0.2])
    assert metrics.count_clashes(i, j, d, 3, np.zeros(0, dtype=np.int64)) == 2
    assert metrics.count_clashes(i, j, d, 3, metrics.pair_keys([[0, 1]], 3)) == 1


def test_elements_one_rule():
    from gmx_dbm.elements import elements, guess_element
    el = elements(["C1", "H12", "CA", "OW", "CH2", "X1", "1HB", "CL1", "BR", "H1", "CL2"],
                  masses=[12.011, 1.008, 12.0, 16.0, 14.027, 14.027, 1.008, 35.45, 79.904, 3.024, 12.011])
    # CL1 of mass 35.45 is chlorine, BR bromine, a 3.024 u hydrogen (mass repartitioning) stays H, and a
    # carbon named CL2 of mass 12 stays C
    assert el.tolist() == ["C", "H", "C", "O", "C", "C", "H", "Cl", "Br", "H", "C"]
    assert guess_element("X", atomic_number=17) == "Cl"        # the topology's at.num wins
    assert guess_element("Q9", mass=30.974) == "P"            # by mass only when the name says nothing


def test_bonded_histograms_identical_and_shifted(tmp_path):
    class Flat:  # the parts of a FlatTopology that BondedHistograms reads
        types = np.array(["C", "C", "H"] * 10)
        bonded = {"bonds": {}, "angles": {1: (np.arange(30).reshape(10, 3), np.zeros((10, 2)))},
                  "dihedrals": {}}
    a = np.arange(100.5, 110.5, 1.0)
    h1, h2, h3 = (metrics.BondedHistograms(Flat) for _ in range(3))
    h1.add(_triplets(a), BIG_BOX)
    h2.add(_triplets(a), BIG_BOX)
    h3.add(_triplets(a + 5), BIG_BOX)
    assert h2.jsd(h1) == {"angle_jsd": 0.0}
    assert h3.jsd(h1)["angle_jsd"] == pytest.approx(0.5 * np.log(2))
    assert h3.jsd_per_type(h1) == {"angle": {"C-C-H": pytest.approx(0.5 * np.log(2))}}
    both = h1.merged(h3)
    assert both.n_frames == 2 and both.total("angle").sum() == 20
