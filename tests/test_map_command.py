"""`gmx_dbm map` end to end through the CLI entry point."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.cli import main
from gmx_dbm.geometry import minimum_image
from gmx_dbm.io import read_frame, read_frames

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def toy_args(out, *extra):
    return ["map", "-f", str(DATA / "toy.gro"), "-s", str(DATA / "toy.gro"), "-p", str(DATA / "toy.top"),
            "-m", str(DATA / "toy.map"), "-o", str(out), *extra]


def test_map_toy_gro(tmp_path):
    out = tmp_path / "cg.gro"
    assert main(toy_args(out)) == 0
    cg = read_frame(out, n_atoms=4)
    assert cg.atoms.names.tolist() == ["A1", "B1", "A1", "B1"]
    assert cg.atoms.resnames.tolist() == ["TOY"] * 4 and cg.atoms.resids.tolist() == [1, 1, 2, 2]
    assert (cg.positions >= 0).all() and (cg.positions < 2.0).all()
    assert cg.time == pytest.approx(1.5)
    # the broken second molecule was made whole: bead A1 of molecule 2 sits between its atoms at x ~ 0
    np.testing.assert_allclose(minimum_image(cg.positions[2] - [0.0, 1.028, 1.0], cg.box), 0, atol=1e-3)
    assert main(toy_args(out, "--no-wrap")) == 0
    assert (tmp_path / "#cg.gro.1#").is_file()
    assert read_frame(out).positions[2, 0] == pytest.approx(2.0, abs=1e-3)


def test_map_to_xtc_and_pdb(tmp_path):
    for ext in (".xtc", ".pdb"):
        out = tmp_path / f"cg{ext}"
        assert main(toy_args(out)) == 0
        assert read_frame(out, n_atoms=4).n_atoms == 4


@pytest.mark.parametrize("change, message", [
    (lambda a, t: a.__setitem__(a.index("-o") + 1, str(t / "missing" / "cg.gro")), "does not exist"),
    (lambda a, t: a.__setitem__(a.index("-o") + 1, str(t / "cg.trr")), "unknown output format"),
    (lambda a, t: a.__setitem__(a.index("-m") + 1, str(t / "bad.map")), "bad.map:3: atom 2"),
    (lambda a, t: a.__setitem__(a.index("-f") + 1, str(t / "short.gro")), "short.gro:2 (frame 0): has 1 atoms"),
])
def test_bad_input_exit_2_and_no_output(tmp_path, capsys, change, message):
    (tmp_path / "bad.map").write_text("[map]\n1 C 1 A\n2 C 1 A\n")
    (tmp_path / "short.gro").write_text("t\n    1\n    1TOY     C1    1   0.100   0.100   0.100\n   2 2 2\n")
    args = toy_args(tmp_path / "cg.gro")
    change(args, tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gmx_dbm map: error: ") and message in err, err
    assert not (tmp_path / "cg.gro").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.map", "short.gro"]


def test_map_sps_xtc_matches_reference(shared_data, tmp_path):
    out = tmp_path / "cg.xtc"
    d = shared_data / "sps" / "t568_train"
    args = ["map", "-f", str(d / "aa.xtc"), "-s", str(shared_data / "sps" / "aa.gro"),
            "-p", str(ROOT / "topologies" / "sps.top"), "-m", str(ROOT / "mappings" / "sps.map"), "-o", str(out)]
    assert main(args) == 0
    n = 0
    for got, ref in zip(read_frames(out, n_atoms=720), read_frames(d / "cg.xtc", n_atoms=720)):
        dev = np.linalg.norm(minimum_image(got.positions - ref.positions, ref.box), axis=1).max()
        assert dev < 0.002
        n += 1
    assert n == 39


@pytest.mark.parametrize("spelling", ["one -m", "-m per file"])
def test_mapping_files_after_one_m_or_one_m_each(tmp_path, spelling):
    """Two moleculetypes, one mapping file each: `-m TOY.map TOY2.map` and `-m TOY.map -m TOY2.map` give
    the same frame as the one-moleculetype toy system (TOY2 is TOY under another name)."""
    top = (DATA / "toy.top").read_text()
    mol = top[top.index("[ moleculetype ]"):top.index("[ system ]")]
    assert "  TOY   2\n" in mol and "[ molecules ]\nTOY 2\n" in top
    top = top.replace("[ system ]", mol.replace("  TOY   2\n", "  TOY2  2\n") + "[ system ]")
    (tmp_path / "two.top").write_text(top.replace("[ molecules ]\nTOY 2\n", "[ molecules ]\nTOY 1\nTOY2 1\n"))
    maps = []
    for name in ("TOY", "TOY2"):   # each file maps the moleculetype named by its stem
        maps.append(str(tmp_path / f"{name}.map"))
        (tmp_path / f"{name}.map").write_text((DATA / "toy.map").read_text())
    m_args = ["-m", *maps] if spelling == "one -m" else ["-m", maps[0], "-m", maps[1]]
    out = tmp_path / "cg.gro"
    assert main(["-q", "map", "-f", str(DATA / "toy.gro"), "-p", str(tmp_path / "two.top"), *m_args,
                 "-o", str(out)]) == 0
    assert main(toy_args(tmp_path / "ref.gro")) == 0
    got, ref = read_frame(out, n_atoms=4), read_frame(tmp_path / "ref.gro", n_atoms=4)
    assert got.atoms.names.tolist() == ref.atoms.names.tolist()
    np.testing.assert_allclose(got.positions, ref.positions, atol=1e-6)
