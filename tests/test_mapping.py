"""Mapping files: parsing, checks against the topology, flat arrays, and reproduction of the reference
CG frames (0.002 nm) with the project's own maps."""
from __future__ import annotations

import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from gmx_dbm.errors import MappingError
from gmx_dbm.geometry import minimum_image
from gmx_dbm.io import read_frame, read_frames
from gmx_dbm.mapping import Mapper, default_align, map_positions, read_mapping
from gmx_dbm.topology import AtomType, Defaults, MoleculeType, System

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.002  # nm, the required reproduction accuracy


# ------------------------------------------------------------------------------------------ helpers
def make_moltype(name, atoms, bonds):
    """atoms: [(name, type, mass)], bonds: 1-based pairs."""
    g = nx.Graph()
    for i, (an, at, m) in enumerate(atoms):
        g.add_node(i, name=an, type=at, mass=m, charge=0.0, resid=1, resname=name, cgnr=i + 1)
    g.add_edges_from((i - 1, j - 1) for i, j in bonds)
    return MoleculeType(name, 2, g, {})


TOY_ATOMS = [("C1", "C", 12.011), ("H1", "H", 1.008), ("C2", "C", 12.011), ("H2", "H", 1.008),
             ("C3", "C", 12.011), ("H3", "H", 1.008), ("C4", "C", 12.011)]
TOY_BONDS = [(1, 2), (1, 3), (3, 4), (3, 5), (5, 6), (5, 7)]


def toy_system(count=2, extra=None):
    """The system of tests/data/toy.top, built by hand (no topology reader needed)."""
    mts = {"TOY": make_moltype("TOY", TOY_ATOMS, TOY_BONDS)}
    molecules = [("TOY", count)]
    if extra:
        mts[extra.name] = extra
        molecules.append((extra.name, 1))
    types = {"C": AtomType("C", 12.011, 0, 0, 0, 0.32, 0.35), "H": AtomType("H", 1.008, 0, 0, 0, 0.23, 0.3)}
    return System(Defaults(comb_rule=2), types, mts, molecules)


def system_from_itp(itp, count, top=None):
    """Stand-in for the topology reader on the shared .itp files: atoms (type, name, mass from the
    [atoms] mass column or the .top's [atomtypes]) and bonds -- all the mapping needs."""
    masses = {}
    if top is not None:
        sec = None
        for line in Path(top).read_text().splitlines():
            line = line.split(";")[0].strip()
            m = re.match(r"\[\s*(\w+)\s*\]", line)
            if m:
                sec = m.group(1)
            elif line and sec == "atomtypes":
                f = line.split()
                masses[f[0]] = float(f[1])
    atoms, bonds, sec, name = [], [], None, None
    for line in Path(itp).read_text().splitlines():
        line = line.split(";")[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"\[\s*(\w+)\s*\]", line)
        if m:
            sec = m.group(1)
            continue
        f = line.split()
        if sec == "moleculetype":
            name = f[0]
        elif sec == "atoms":
            atoms.append((f[4], f[1], float(f[7]) if len(f) > 7 else masses[f[1]]))
        elif sec == "bonds":
            bonds.append((int(f[0]), int(f[1])))
    mt = make_moltype(name, atoms, bonds)
    return System(Defaults(), {}, {name: mt}, [(name, count)])


def load_system(shared, which):
    """The project topology via read_topology when it exists, else the shared .itp stand-in."""
    top = ROOT / "topologies" / f"{which}.top"
    try:
        from gmx_dbm.topology import read_topology
    except ImportError:
        read_topology = None
    if read_topology is not None and top.is_file():
        return read_topology(top)
    if which == "sps":
        return system_from_itp(shared / "sps" / "topol_PS1.itp", 36, shared / "sps" / "topol.top")
    if which == "octane":
        return system_from_itp(shared / "octane" / "L49C.itp", 215)
    return system_from_itp(shared / "cumene" / "G065.itp", 265)


def shared_sps_system(shared, tmp_path):
    """The shared sPS topol.top itself; its unconditional #include "posres.itp" is not shipped, so an
    empty one is offered from a temporary include folder."""
    from gmx_dbm.topology import read_topology
    (tmp_path / "posres.itp").write_text("; empty: position restraints are not needed for mapping\n")
    return read_topology(shared / "sps" / "topol.top", include_dirs=[str(tmp_path)])


def max_deviation(mapper, aa_frames, cg_frames):
    worst = 0.0
    n = 0
    for aa, cg in zip(aa_frames, cg_frames):
        got = mapper.map(aa)
        d = minimum_image(got.positions - cg.positions, cg.box)
        worst = max(worst, float(np.linalg.norm(d, axis=1).max()))
        n += 1
    return worst, n


# ------------------------------------------------------------------------------------------ parsing
def test_toy_map_reads():
    system = toy_system()
    sm = read_mapping(DATA / "toy.map", system)
    mm = sm.molecules["TOY"]
    assert [b.type for b in mm.beads] == ["A", "B"]
    assert [b.atoms for b in mm.beads] == [(0, 1, 2, 3), (4, 5, 6)]
    assert mm.cg_bonds == [(0, 1)]
    b1, b2 = mm.beads
    assert b1.centre_atoms.tolist() == [0, 2, 4]
    np.testing.assert_allclose(b1.centre_weights, [0.4, 0.4, 0.2])
    assert b2.centre_atoms.tolist() == [4, 5, 6]  # default: centre of mass of its own atoms
    np.testing.assert_allclose(b2.centre_weights, np.array([12.011, 1.008, 12.011]) / 25.03)
    assert (b1.align, b1.align_explicit) == (1, True)
    assert (b2.align, b2.align_explicit) == (0, False)  # default: previous bead along the chain
    assert [b.name for b in mm.beads] == ["A1", "B1"]


def test_flat_arrays():
    system = toy_system(count=3)
    flat = read_mapping(DATA / "toy.map", system).flat()
    assert flat.n_beads == 6 and flat.n_atoms == 21
    assert flat.bead_types.tolist() == ["A", "B"] * 3
    assert flat.bead_type_names == ["A", "B"]
    assert flat.bead_type_index.tolist() == [0, 1] * 3
    assert flat.bead_mol.tolist() == [0, 0, 1, 1, 2, 2]
    assert flat.bead_local.tolist() == [0, 1] * 3
    assert flat.atom_bead.tolist() == ([0] * 4 + [1] * 3) + ([2] * 4 + [3] * 3) + ([4] * 4 + [5] * 3)
    assert flat.align.tolist() == [1, 0, 3, 2, 5, 4]
    assert flat.cg_bonds.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert flat.centre.shape == (6, 21)
    np.testing.assert_allclose(np.asarray(flat.centre.sum(axis=1)).ravel(), 1.0)
    assert flat.centre[2, 7] == pytest.approx(0.4)  # molecule 2's C1
    assert flat.bead_resids.tolist() == [1, 1, 2, 2, 3, 3]
    assert flat.bead_names.tolist() == ["A1", "B1"] * 3


def test_map_positions_makes_molecules_whole():
    system = toy_system()
    sm = read_mapping(DATA / "toy.map", system)
    frame = read_frame(DATA / "toy.gro", n_atoms=14)
    cg = map_positions(frame, system, sm, wrap=False)
    pos = frame.positions.copy()
    # molecule 2 is split at x = 0/2 nm: its C1/H1 belong next to C2 at x = 2.05
    pos[9:14, 0] += 2.0
    expect_b1 = 0.4 * pos[7] + 0.4 * pos[9] + 0.2 * pos[11]
    np.testing.assert_allclose(cg.positions[2], expect_b1, atol=1e-12)
    cgw = map_positions(frame, system, sm)  # wrapped into the box by default
    assert (cgw.positions >= 0).all() and (cgw.positions < 2.0).all()
    np.testing.assert_allclose(minimum_image(cgw.positions - cg.positions, frame.box), 0, atol=1e-12)
    assert cgw.atoms.names.tolist() == ["A1", "B1", "A1", "B1"]
    assert cgw.time == pytest.approx(1.5) and cgw.step == 3


def test_default_align_prefers_previous_bead_then_chain():
    # sPS-like: backbone 0-2-4, side groups 1 (on 0), 3 (on 2), 5 (on 4)
    g = nx.Graph([(0, 1), (0, 2), (2, 3), (2, 4), (4, 5)])
    assert [default_align(g, b) for b in range(6)] == [2, 0, 0, 2, 2, 4]
    g.add_node(6)
    assert default_align(g, 6) is None


def _write(tmp_path, text, name="bad.map"):
    p = tmp_path / name
    p.write_text(text)
    return p


TOY_MAP_LINES = ["[map]", "1 C 1 A", "2 H 1 A", "3 C 1 A", "4 H 1 A", "5 C 2 B", "6 H 2 B", "7 C 2 B"]


@pytest.mark.parametrize("edit, line, message", [
    (lambda L: L[:7] + ["8 C 2 B"], 8, "atom 8 is not in moleculetype TOY"),
    (lambda L: L[:2] + ["2 C 1 A"] + L[3:], 3, "has type H in the topology, the map says C"),
    (lambda L: L[:7], 2, "are in no bead: 7 (C4)"),
    (lambda L: L + ["7 C 2 B"], 9, "atom 7 is mapped twice"),
    (lambda L: L + ["[align]", "1 3"], 10, "align partner (fixpoint) bead 3 does not exist"),
    (lambda L: L + ["[align]", "1 1"], 10, "cannot align to itself"),
    (lambda L: [x.replace(" 2 B", " 3 B") for x in L], 2, "no atoms in bead(s) 2"),
    (lambda L: L[:5] + ["5 C 2 A"] + L[6:], 7, "bead 2 has type A (line 6), here B"),
    (lambda L: L + ["[centre]", "1 9"], 10, "atom 9 is not in moleculetype TOY"),
    (lambda L: L + ["[centre]", "3 1"], 10, "bead 3 does not exist"),
    (lambda L: L + ["[centre]", "1 1 -2"], 10, "mass factor must be positive"),
    (lambda L: L + ["[ frobnicate ]"], 9, "unknown section [frobnicate]"),
    (lambda L: L[:3] + ["x C 1 A"] + L[4:], 4, "expected an atom index (an integer), got 'x'"),
    (lambda L: L[:3] + ["3 C 1"] + L[4:], 4, "expected 'atom-index atom-type bead-index bead-type'"),
    (lambda L: L + ["[mult]", "1 0"], 10, "multiples of bead 1 must be >= 1"),
])
def test_bad_maps_name_path_and_line(tmp_path, edit, line, message):
    p = _write(tmp_path, "\n".join(edit(list(TOY_MAP_LINES))) + "\n")
    with pytest.raises(MappingError) as err:
        read_mapping(p, toy_system())
    text = str(err.value)
    assert text.startswith(f"{p}:{line}:"), text
    assert message in text


def test_section_headers_with_spaces_and_closing_tags(tmp_path):
    text = "; comment\n[ map ]\n" + "\n".join(TOY_MAP_LINES[1:]) + "  ; trailing\n[ /map ]\n[ align ]\n2 1\n[/align]\n"
    mm = read_mapping(_write(tmp_path, text), toy_system()).molecules["TOY"]
    assert mm.beads[1].align == 0 and mm.beads[1].align_explicit


def test_several_moleculetypes(tmp_path):
    other = make_moltype("MET", [("C", "C", 12.011), ("H", "H", 1.008)], [(1, 2)])
    system = toy_system(extra=other)
    met = _write(tmp_path, "[ molecule ]\nMET\n[map]\n1 C 1 M\n2 H 1 M\n", "methyl.map")
    toy = _write(tmp_path, "[ molecule ]\nTOY\n" + (DATA / "toy.map").read_text(), "toy.map")
    sm = read_mapping([toy, met], system)
    flat = sm.flat()
    assert flat.bead_types.tolist() == ["A", "B", "A", "B", "M"]
    assert flat.align.tolist() == [1, 0, 3, 2, -1]  # a lone bead has no fixpoint
    with pytest.raises(MappingError, match="no mapping for moleculetype"):
        read_mapping([met], system)
    stem = _write(tmp_path, "[map]\n1 C 1 M\n2 H 1 M\n", "MET.map")  # matched by file name
    assert "MET" in read_mapping([toy, stem], system).molecules
    with pytest.raises(MappingError, match="cannot tell which moleculetype"):
        read_mapping([DATA / "toy.map"], system)
    wrong = _write(tmp_path, "[ molecule ]\nNOPE\n[map]\n1 C 1 M\n", "nope.map")
    with pytest.raises(MappingError, match=r"nope.map:2: moleculetype NOPE is not in the topology"):
        read_mapping([wrong], system)


def test_missing_map_file(tmp_path):
    with pytest.raises(MappingError, match="mapping file not found"):
        read_mapping(tmp_path / "none.map", toy_system())


# --------------------------------------------------------------------- reference data (0.002 nm)
@pytest.mark.parametrize("topology", ["project", "shared"])
def test_sps_map_reproduces_reference_cg_frames(shared_data, tmp_path, topology):
    system = load_system(shared_data, "sps") if topology == "project" else shared_sps_system(shared_data, tmp_path)
    mapper = Mapper(system, read_mapping(ROOT / "mappings" / "sps.map", system))
    d = shared_data / "sps" / "t568_train"
    worst, n = max_deviation(mapper, read_frames(d / "aa.xtc", n_atoms=5832), read_frames(d / "cg.xtc", n_atoms=720))
    assert n == 39
    assert worst < TOLERANCE, f"max bead deviation {worst:.5f} nm"
    # the single-frame pair and the reference bead names
    cg = read_frame(shared_data / "sps" / "cg.gro")
    got = mapper.map(read_frame(shared_data / "sps" / "aa.gro"))
    assert np.linalg.norm(minimum_image(got.positions - cg.positions, cg.box), axis=1).max() < TOLERANCE
    assert got.atoms.names.tolist() == cg.atoms.names.tolist()
    assert got.atoms.resids.tolist() == cg.atoms.resids.tolist()
    assert got.atoms.resnames.tolist() == cg.atoms.resnames.tolist()


@pytest.mark.parametrize("which, folder, n_beads", [("octane", "octane", 860), ("cumene", "cumene", 795)])
def test_liquid_maps_reproduce_reference_cg_frames(shared_data, which, folder, n_beads):
    system = load_system(shared_data, which)
    mapper = Mapper(system, read_mapping(ROOT / "mappings" / f"{which}.map", system))
    aa = sorted((shared_data / folder).glob("*/aa/*.gro"))
    cg = [p.parent.parent / "cg" / p.name for p in aa]
    assert len(aa) >= 7
    worst, n = max_deviation(mapper, (read_frame(p) for p in aa), (read_frame(p, n_atoms=n_beads) for p in cg))
    assert n == len(aa)
    assert worst < TOLERANCE, f"max bead deviation {worst:.5f} nm"
    ref = read_frame(cg[0])
    assert mapper.map(read_frame(aa[0])).atoms.names.tolist() == ref.atoms.names.tolist()
