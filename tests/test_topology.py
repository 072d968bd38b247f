"""Topology reader: units adapter on a hand-computed .itp, type lookups, nrexcl, errors with file:line."""
from __future__ import annotations

import math
import textwrap

import pytest

from gmx_dbm import units
from gmx_dbm.errors import TopologyError, TrajectoryError
from gmx_dbm.topology import check_structure, read_topology

TINY = """
[ defaults ]
1 2 yes 0.5 0.8333
[ atomtypes ]
; name mass charge ptype sigma epsilon
CA 12.011 0.0 A 0.340 0.360
HA  1.008 0.0 A 0.250 0.125
[ nonbond_params ]
CA HA 1 0.300 0.200
[ bondtypes ]
CA HA 1 0.108 307105.6
[ angletypes ]
HA CA HA 1 109.5 292.88
[ moleculetype ]
M 2
[ atoms ]
1 CA 1 MOL C1 1 -0.3
2 HA 1 MOL H1 1 0.1 1.5
3 HA 1 MOL H2 1 0.1
4 HA 1 MOL H3 1 0.1
[ bonds ]
1 2 1
1 3 1 0.110 300000.0
1 4 2 0.109 1.2e7
[ angles ]
2 1 3 1
[ pairs ]
2 3 1
[ system ]
tiny
[ molecules ]
M 2
"""


def write(tmp_path, text, name="t.top"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_units_adapter_hand_computed(tmp_path):
    s = read_topology(write(tmp_path, TINY))
    ca, ha = s.atomtypes["CA"], s.atomtypes["HA"]
    # back through ParmEd's Amber units to exactly the file values
    assert ca.sigma == pytest.approx(0.340, rel=1e-12) and ca.epsilon == pytest.approx(0.360, rel=1e-12)
    assert ha.mass == pytest.approx(1.008)
    # hand-computed C6 = 4 eps sigma^6, C12 = 4 eps sigma^12
    assert ca.c6 == pytest.approx(4 * 0.360 * 0.340 ** 6, rel=1e-12)
    assert ca.c12 == pytest.approx(4 * 0.360 * 0.340 ** 12, rel=1e-12)
    # [ nonbond_params ] (sigma/eps for comb-rule 2) overrides the combination rule
    assert s.lj_c6_c12("HA", "CA") == pytest.approx((4 * 0.2 * 0.3 ** 6, 4 * 0.2 * 0.3 ** 12), rel=1e-12)
    # combination rule 2 for HA-HA pairs: sigma arithmetic, eps geometric
    assert s.lj_c6_c12("HA", "HA")[0] == pytest.approx(4 * 0.125 * 0.25 ** 6, rel=1e-12)
    d = s.defaults
    assert (d.comb_rule, d.gen_pairs, d.fudge_lj, d.fudge_qq) == (2, True, 0.5, 0.8333)
    mt = s.moleculetypes["M"]
    bonds = {b.atoms: (b.func, b.params) for b in mt.interactions["bonds"]}
    assert bonds[(0, 1)] == (1, (0.108, 307105.6))          # from [ bondtypes ]
    assert bonds[(0, 2)] == (1, (0.110, 300000.0))          # inline
    assert bonds[(0, 3)] == (2, (0.109, 1.2e7))             # G96 kept as func 2
    assert mt.interactions["angles"][0].params == (109.5, 292.88)
    # gen-pairs: fudgeLJ * combination (nonbond_params count for pair generation, as grompp)
    (pair,) = mt.interactions["pairs"]
    assert pair.params == pytest.approx((0.5 * 4 * 0.125 * 0.25 ** 6, 0.5 * 4 * 0.125 * 0.25 ** 12))
    assert mt.atom_attr("mass") == [12.011, 1.5, 1.008, 1.008]
    assert mt.atom_attr("charge") == [-0.3, 0.1, 0.1, 0.1]
    assert mt.nrexcl == 2 and s.n_atoms == 8


def test_parmed_bonded_units_roundtrip():
    # ParmEd's BondType(k/2 in kcal/mol/A^2, req A) for kb=307105.6 kJ/mol/nm^2, b0=0.108 nm
    k_amber = 307105.6 / 2 / 4.184 / 100
    assert units.bond_from_parmed(1.08, k_amber) == pytest.approx((0.108, 307105.6))
    assert units.angle_from_parmed(109.5, 292.88 / 2 / 4.184) == pytest.approx((109.5, 292.88))
    assert units.ONE_4PI_EPS0 == pytest.approx(138.935458, rel=1e-8)


def test_comb_rule_1_and_defines(tmp_path):
    text = """
    [ defaults ]
    1 1 no 1.0 1.0
    [ atomtypes ]
    X 10.0 0.0 A 2.0e-3 3.0e-6
    [ moleculetype ]
    M 3
    [ atoms ]
    1 X 1 M A 1
    2 X 1 M B 1
    3 X 1 M C 1
    4 X 1 M D 1
    [ bonds ]
    1 2 1 0.1 1000
    2 3 1 0.1 1000
    #ifdef LONG
    3 4 1 0.1 1000
    #endif
    [ molecules ]
    M 1
    """
    p = write(tmp_path, text)
    s = read_topology(p)
    assert s.atomtypes["X"].c6 == pytest.approx(2.0e-3, rel=1e-12)
    assert s.atomtypes["X"].c12 == pytest.approx(3.0e-6, rel=1e-12)
    assert len(s.moleculetypes["M"].interactions["bonds"]) == 2
    mt = read_topology(p, defines=["LONG"]).moleculetypes["M"]
    assert len(mt.interactions["bonds"]) == 3
    # nrexcl 3 over the bond graph: 1-4 excluded only with the extra bond
    assert (0, 3) in mt.excluded_pairs()


def test_dihedraltype_wildcards_and_type9_terms(tmp_path):
    text = """
    [ defaults ]
    1 2 no 1.0 1.0
    [ atomtypes ]
    A 12 0 A 0.3 0.3
    B 12 0 A 0.3 0.3
    [ dihedraltypes ]
    X A A X 9 0.0 1.0 3
    B A A B 9 0.0 2.0 1
    B A A B 9 180.0 3.0 2
    [ moleculetype ]
    M 3
    [ atoms ]
    1 B 1 M B1 1
    2 A 1 M A2 1
    3 A 1 M A3 1
    4 B 1 M B4 1
    5 A 1 M A5 1
    [ dihedrals ]
    1 2 3 4 9
    5 2 3 4 9
    [ molecules ]
    M 1
    """
    mt = read_topology(write(tmp_path, text)).moleculetypes["M"]
    d = [(x.atoms, x.params) for x in mt.interactions["dihedrals"]]
    assert d == [((0, 1, 2, 3), (0.0, 2.0, 1.0)), ((0, 1, 2, 3), (180.0, 3.0, 2.0)),   # specific: 2 terms
                 ((4, 1, 2, 3), (0.0, 1.0, 3.0))]                                     # wildcard


def test_sps_reference_reads_fast_and_exact(shared_data, tmp_path):
    import shutil
    import time
    for n in ("topol.top", "topol_PS1.itp"):
        shutil.copy(shared_data / "sps" / n, tmp_path / n)
    with pytest.raises(TopologyError, match=r"topol_PS1.itp:\d+: #include file 'posres.itp' not found"):
        read_topology(tmp_path / "topol.top")
    (tmp_path / "posres.itp").write_text("")
    t = time.perf_counter()
    s = read_topology(tmp_path / "topol.top")
    assert time.perf_counter() - t < 5.0
    mt = s.moleculetypes["PS1"]
    assert s.n_atoms == 5832 and mt.nrexcl == 2
    assert len(mt.interactions["pairs"]) == 0          # ParmEd's invented 1-4 pairs are not taken
    check_structure(s, 5832, "aa.gro")
    with pytest.raises(TrajectoryError, match="5831 atoms"):
        check_structure(s, 5831, "aa.gro")


BAD_BASE = """
[ defaults ]
1 2 no 1.0 1.0
[ atomtypes ]
A 12 0 A 0.3 0.3
[ moleculetype ]
M 3
[ atoms ]
1 A 1 M A1 1
2 {t2} 1 M A2 1
[ bonds ]
1 2 1 {bond}
[ molecules ]
{mol} 1
"""


@pytest.mark.parametrize("fields, pattern", [
    (dict(t2="Q", bond="0.1 100", mol="M"), r"t.top:10 \(molecule M\): atom type 'Q'"),
    (dict(t2="A", bond="", mol="M"), r"t.top:12 \(molecule M\): no parameters for bond 1\(A1/A\)-2\(A2/A\)"),
    (dict(t2="A", bond="0.1 100", mol="N"), r"t.top:14: molecule type 'N'"),
    (dict(t2="A", bond="0.1 x", mol="M"), r"t.top:12: non-numeric parameters"),
])
def test_errors_name_file_and_line(tmp_path, fields, pattern):
    p = write(tmp_path, BAD_BASE.format(**fields))
    with pytest.raises(TopologyError, match=pattern):
        read_topology(p)


def test_missing_include_names_including_line(tmp_path):
    write(tmp_path, '[ defaults ]\n1 2 no 1 1\n#include "nothere.itp"\n')
    with pytest.raises(TopologyError, match=r"t.top:3: #include file 'nothere.itp' not found"):
        read_topology(tmp_path / "t.top")


def test_gromacs_forcefield_include(tmp_path, gmx):
    write(tmp_path, '#include "oplsaa.ff/forcefield.itp"\n#include "oplsaa.ff/methanol.itp"\n'
                    "[ system ]\nm\n[ molecules ]\nMET 2\n")
    s = read_topology(tmp_path / "t.top")
    assert s.defaults.comb_rule == 3 and s.defaults.gen_pairs and math.isclose(s.defaults.fudge_lj, 0.5)
    assert s.n_atoms == 12


ATNUM_ITP = """
[ atomtypes ]
; the three column layouts grompp reads: name at.num mass ...; name bond_type at.num mass ...; name mass ...
CAI   20 40.08  2.0 A 0.30 0.5
opls_x CT 6 12.011 0.0 A 0.35 0.27
CLX   17 35.45 -1.0 A 0.40 0.4
HW       1.008  0.4 A 0.0  0.0
[ moleculetype ]
ION 1
[ atoms ]
1 CAI 1 ION CA 1
[ moleculetype ]
LIG 3
[ atoms ]
1 opls_x 1 LIG Q1  1
2 CLX    1 LIG X2  1
3 HW     1 LIG HW1 1
[ bonds ]
1 3 1 0.1 1000
"""

ATNUM_TOP = """
[ defaults ]
1 2 no 1.0 1.0
#include "atnum.itp"
[ system ]
at.num
[ molecules ]
ION 1
LIG 1
"""


def test_atomtypes_atomic_number_gives_elements(tmp_path):
    # the at.num column wins over names that suggest something else: an ion named CA is calcium
    write(tmp_path, ATNUM_ITP, "atnum.itp")
    s = read_topology(write(tmp_path, ATNUM_TOP))
    assert {n: t.atomic_number for n, t in s.atomtypes.items()} == {"CAI": 20, "opls_x": 6, "CLX": 17, "HW": None}
    flat = s.flat()
    assert flat.elements.tolist() == ["Ca", "C", "Cl", "H"]
    assert flat.is_heavy.tolist() == [True, True, True, False]


def test_atomtypes_atomic_number_must_be_an_integer(tmp_path):
    write(tmp_path, ATNUM_ITP.replace("CLX   17", "CLX   1.7x"), "atnum.itp")
    with pytest.raises(TopologyError, match=r"atnum.itp:6: .*at.num"):
        read_topology(write(tmp_path, ATNUM_TOP))


@pytest.mark.parametrize("header, pattern", [
    ("[ bonds ]\n1 2 1 0.1 100\n", r"t.top:3: \[ bonds \] outside a \[ moleculetype \]"),
    ("[ cmap ]\n", r"t.top:3: section \[ cmap \] is not supported"),
    ("[ atoms\n", r"t.top:3: malformed section header"),
])
def test_section_header_errors(tmp_path, header, pattern):
    p = write(tmp_path, "[ defaults ]\n1 2 no 1 1\n" + header)
    with pytest.raises(TopologyError, match=pattern):
        read_topology(p)


def test_text_before_first_section(tmp_path):
    with pytest.raises(TopologyError, match=r"t.top:1: text before the first \[ section \]"):
        read_topology(write(tmp_path, "1 2 no 1 1\n[ defaults ]\n"))
