"""Repeat-unit mappings: the project's maps expand to the per-molecule maps they replace, apply to sPS
chains of any length and to topologies with one residue per monomer, and bad files or molecules the units
do not cover give one error naming the file and line (or moleculetype and atom)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.cli import main
from gmx_dbm.errors import MappingError
from gmx_dbm.mapping import read_mapping
from gmx_dbm.mapping.chemistry import bead_signatures
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
MAPS = ROOT / "mappings"


def _same_beads(a, b) -> list:
    """Differences between two MoleculeMappings (empty: the same beads, centres, axes and names)."""
    out = []
    if len(a.beads) != len(b.beads):
        return [f"{len(a.beads)} beads against {len(b.beads)}"]
    for x, y in zip(a.beads, b.beads):
        same = (x.type == y.type and x.atoms == y.atoms and x.align == y.align and x.name == y.name
                and np.array_equal(x.centre_atoms, y.centre_atoms)
                and np.allclose(x.centre_weights, y.centre_weights, rtol=0, atol=1e-9))
        if not same:
            out.append(f"bead {x.index + 1}: {x} != {y}")
    if a.cg_bonds != b.cg_bonds:
        out.append("CG bonds differ")
    return out


@pytest.mark.parametrize("top, units, per_molecule", [
    ("sps.top", "sps.map", "sps10_permolecule.map"),
    ("octane.top", "octane.map", "octane_permolecule.map"),
    ("cumene.top", "cumene.map", "cumene_permolecule.map"),
])
def test_repeat_unit_maps_expand_to_the_per_molecule_maps(top, units, per_molecule):
    system = read_topology(ROOT / "topologies" / top)
    new = read_mapping([MAPS / units], system)
    old = read_mapping([DATA / per_molecule], system)
    for name in old.molecules:
        assert _same_beads(new.molecules[name], old.molecules[name]) == []
        assert new.molecules[name].units is not None and old.molecules[name].units is None


def _make_topologies():
    spec = importlib.util.spec_from_file_location("make_topologies", ROOT / "topologies" / "make_topologies.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_sps_top(tmp_path, lengths: dict) -> Path:
    """A topology of sPS chains {n_monomers: count}, moleculetypes PS<n> from topologies/make_topologies.py."""
    mk = _make_topologies()
    lines = [f'#include "{ROOT / "topologies" / "mp_ps.ff" / "forcefield.itp"}"']
    for n in lengths:
        (tmp_path / f"PS{n}.itp").write_text(mk.sps(n, f"PS{n}").itp(f"; sPS {n}-mer"))
        lines.append(f'#include "PS{n}.itp"')
    lines += ["", "[ system ]", "sPS", "", "[ molecules ]"] + [f"PS{n}  {c}" for n, c in lengths.items()]
    top = tmp_path / "topol.top"
    top.write_text("\n".join(lines) + "\n")
    return top


def test_sps_map_serves_any_chain_length(tmp_path):
    system = read_topology(write_sps_top(tmp_path, {20: 2, 2: 1, 10: 1}))
    smap = read_mapping([MAPS / "sps.map"], system)
    m20, m2, m10 = smap.molecules["PS20"], smap.molecules["PS2"], smap.molecules["PS10"]
    assert [u[0] for u in m20.units] == ["STY_first"] + ["STY"] * 18 + ["STY_last"]
    assert [u[0] for u in m2.units] == ["STY_first", "STY_last"]
    assert m20.n_beads == 40 and m2.n_beads == 4 and m10.n_beads == 20
    assert [u[0] for u in m10.units] == ["STY_first"] + ["STY"] * 8 + ["STY_last"]
    assert [b.name for b in m20.beads[-2:]] == ["B20", "S20"]
    # every atom in exactly one bead
    for mm, n in ((m20, 20), (m2, 2)):
        owner = mm.atom_bead()
        assert len(owner) == 16 * n + 2 and sorted(a for b in mm.beads for a in b.atoms) == list(range(16 * n + 2))
    # an inner backbone bead of the 20-mer has the 10-mer's weights (the half-mass rule), shifted by units
    ten = read_mapping([DATA / "sps10_permolecule.map"], read_topology(ROOT / "topologies" / "sps.top"))
    b10, b20 = ten.molecules["PS1"].beads[4], m20.beads[14]
    np.testing.assert_allclose(b20.centre_weights, b10.centre_weights)
    np.testing.assert_array_equal(b20.centre_atoms - b10.centre_atoms, 16 * 5)
    # the chemistry: a 20-mer and a 2-mer have the beads of a 10-mer, nothing else
    assert set(bead_signatures(smap)) == set(bead_signatures(ten))


def test_residue_per_monomer_topology_matches_by_names(tmp_path):
    """The same 3-mer written with one residue STY per monomer and monomer-local atom names maps by residue
    and to the same beads as the graph match of the one-residue chain."""
    top = write_sps_top(tmp_path, {3: 1})
    itp = tmp_path / "PS3.itp"
    graph_map = read_mapping([MAPS / "sps.map"], read_topology(top)).molecules["PS3"]
    local = {}
    for k, (unit, atoms, _) in enumerate(graph_map.units):
        names = [a.name for a in _unit(unit).atoms]
        for a, name in zip(atoms, names):
            local[a + 1] = (k + 1, name)
    out, section = [], None
    for line in itp.read_text().splitlines():
        s = line.split(";")[0].strip()
        if s.startswith("["):
            section = s.strip("[] ")
        elif s and section == "atoms":
            f = s.split()
            resid, name = local[int(f[0])]
            f[2], f[3], f[4] = str(resid), "STY", name
            line = "  ".join(f)
        out.append(line)
    itp.write_text("\n".join(out) + "\n")
    smap = read_mapping([MAPS / "sps.map"], read_topology(top))
    by_residue = smap.molecules["PS3"]
    assert {u[2] for u in by_residue.units} == {"residue"}
    assert [u[0] for u in by_residue.units] == ["STY_first", "STY", "STY_last"]
    assert _same_beads(by_residue, graph_map) == []


def _unit(name):
    from gmx_dbm.mapping.units import read_units
    return next(u for u in read_units(MAPS / "sps.map") if u.name == name)


def test_molecule_the_units_do_not_cover_names_molecule_and_atom():
    system = read_topology(ROOT / "topologies" / "sps.top")
    with pytest.raises(MappingError) as err:
        read_mapping([MAPS / "octane.map"], system)
    text = str(err.value)
    assert "moleculetype PS1" in text and "atom 1 (H1, type H" in text and "sps.itp:" in text
    assert "octane.map" in text


def test_undeclared_link_is_refused(tmp_path):
    """A unit whose bond to the next unit is not declared does not cover a chain."""
    text = (MAPS / "sps.map").read_text().replace("  C5  +C2\n", "", 1)   # STY loses its link forwards
    bad = tmp_path / "sps.map"
    bad.write_text(text)
    with pytest.raises(MappingError, match="moleculetype PS1 cannot be cut into the units"):
        read_mapping([bad], read_topology(ROOT / "topologies" / "sps.top"))


UNIT = """[ unit ]
ETH
[ atoms ]
C1 C B
C2 C B
[ beads ]
B B . B{n}
[ bonds ]
C1 C2
"""


@pytest.mark.parametrize("text, line, message", [
    ("[ atoms ]\nC1 C B\n", 1, "before any [ unit ]"),
    (UNIT + "C1 C3\n", 10, "atom C3, which is not in [ atoms ]"),
    (UNIT.replace("C2 C B", "C1 C B"), 5, "atom C1 appears twice"),
    (UNIT + "-C1 +C2\n", 10, "one side must be an atom of the unit"),
    (UNIT + "[ centre ]\nX C1\n", 11, "names bead X"),
    (UNIT + "[ centre ]\nB C1 -1\n", 11, "mass factor must be positive"),
    (UNIT.replace("B B . B{n}", "B B B"), 7, "cannot align to itself"),
    (UNIT.replace("C2 C B", "C2 C A"), 5, "bead A, which is not in [ beads ]"),
    ("[ unit ]\n[ atoms ]\n", 1, "needs a line 'NAME"),
    (UNIT + UNIT, 11, "unit ETH is defined twice"),
])
def test_bad_unit_files_name_file_and_line(tmp_path, text, line, message):
    from gmx_dbm.mapping.units import read_units
    path = tmp_path / "bad.map"
    path.write_text(text)
    with pytest.raises(MappingError) as err:
        read_units(path)
    assert f"bad.map:{line}:" in str(err.value) and message in str(err.value)


def test_a_file_cannot_mix_per_molecule_and_unit_sections(tmp_path):
    path = tmp_path / "mixed.map"
    path.write_text(UNIT + "[ map ]\n1 C 1 B\n")
    with pytest.raises(MappingError, match="not both"):
        read_mapping([path], read_topology(ROOT / "topologies" / "octane.top"))


def test_mapping_command_reports_and_writes_the_expanded_map(tmp_path, capsys):
    top = write_sps_top(tmp_path, {4: 3})
    out = tmp_path / "expanded.map"
    out.write_text("a file of the user's\n")
    assert main(["mapping", "-p", str(top), "-m", str(MAPS / "sps.map"), "-o", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "moleculetype PS4: 3 molecule(s), 66 atoms -> 8 beads" in shown
    assert "STY_first STY STY STY_last" in shown and "unmapped atoms: 0" in shown
    assert (tmp_path / "#expanded.map.1#").read_text() == "a file of the user's\n"
    system = read_topology(top)
    assert _same_beads(read_mapping([out], system).molecules["PS4"],
                       read_mapping([MAPS / "sps.map"], system).molecules["PS4"]) == []


def test_mapping_command_error_exit_code_2(tmp_path, capsys):
    top = write_sps_top(tmp_path, {3: 1})
    assert main(["mapping", "-p", str(top), "-m", str(MAPS / "cumene.map")]) == 2
    err = capsys.readouterr().err
    assert "moleculetype PS3" in err and err.count("\n") == 1


def test_specific_model_fits_by_bead_chemistry(tmp_path):
    """The shipped sps model takes any sPS chain length and mixtures, and refuses a bead it never saw,
    naming it, even when its bead and atom types are known."""
    from gmx_dbm.backmap import model_fits, shipped_model_path
    from gmx_dbm.model.checkpoint import read_model_meta
    meta = read_model_meta(shipped_model_path("sps"))
    mix = read_topology(write_sps_top(tmp_path, {20: 2, 3: 4, 7: 1}))
    assert model_fits(meta, read_mapping([MAPS / "sps.map"], mix)) is None
    octane = read_topology(ROOT / "topologies" / "octane.top")
    as_bb = tmp_path / "octane_bb.map"
    as_bb.write_text((MAPS / "octane.map").read_text().replace("  B      B ", "  B      BB "))
    why = model_fits(meta, read_mapping([as_bb], octane))
    assert why.startswith("it is chemically specific and never saw bead 1 (B1) of moleculetype L49C")
    assert "bead type BB, atoms C:2 H:5" in why
