"""Backmapping topologies other than the one a model was trained on: several moleculetypes in one box,
and hydrogen-mass repartitioning (hydrogens of 3 u must stay hydrogens everywhere: generation order,
h-bonds constraints, stereocentres, restraints)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gmx_dbm.cli import main  # noqa: E402
from gmx_dbm.io import read_frame  # noqa: E402
from gmx_dbm.topology import read_topology  # noqa: E402
from toy import build_toy_model  # noqa: E402  (tests/toy.py)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy_model(tmp_path_factory.mktemp("variants"), constraints="none")


def _two_moleculetypes(d: Path) -> tuple:
    """toy.top with its second molecule as its own moleculetype TOYB (same chemistry, other names),
    and a mapping file per moleculetype."""
    top = (DATA / "toy.top").read_text()
    mol = re.search(r"\[ moleculetype \].*?(?=\[ system \])", top, re.S).group(0)
    molb = mol.replace("TOY   2", "TOYB  2").replace(" TOY ", " TYB ")
    for k in range(1, 5):
        molb = molb.replace(f" C{k} ", f" CB{k} ").replace(f" H{k} ", f" HB{k} ")
    text = top.replace("[ system ]", molb + "[ system ]").replace("TOY 2\n", "TOY 1\nTOYB 1\n")
    (d / "two.top").write_text(text)
    mp = (DATA / "toy.map").read_text()
    (d / "TOY.map").write_text("[ molecule ]\nTOY\n" + mp)
    (d / "TOYB.map").write_text("[ molecule ]\nTOYB\n" + mp)
    return d / "two.top", [d / "TOY.map", d / "TOYB.map"]


def test_two_moleculetypes_in_one_box(toy, tmp_path):
    top, maps = _two_moleculetypes(tmp_path)
    system = read_topology(top)
    assert [m for m, _ in system.molecules] == ["TOY", "TOYB"]
    out = tmp_path / "aa.gro"
    assert main(["-q", "backmap", "-c", str(toy["cg"]), "-p", str(top), "-m", *map(str, maps), "-o", str(out),
                 "--model", str(toy["model"]), "--gibbs", "1", "--threads", "1"]) == 0
    fr = read_frame(out)
    flat = system.flat()
    assert fr.atoms.names.tolist() == flat.names.tolist()
    assert fr.atoms.names[7:].tolist()[:2] == ["CB1", "HB1"]
    # both molecules generated: every bond of both moleculetypes near its length
    idx = np.concatenate([i for i, _ in flat.bonded["bonds"].values()])
    from gmx_dbm.geometry import minimum_image
    r = np.linalg.norm(minimum_image(fr.positions[idx[:, 1]] - fr.positions[idx[:, 0]], fr.box), axis=1)
    assert r.min() > 0.07 and r.max() < 0.25


def _hmr_topology(d: Path) -> Path:
    """toy.top with hydrogen-mass repartitioning: each hydrogen 3.024 u, its carbon 2.016 u lighter."""
    text = (DATA / "toy.top").read_text()
    text = re.sub(r"(\s\d+\s+H\s+1\s+TOY\s+H\d\s+\d\s+0\.0\s+)1\.008", r"\g<1>3.024", text)
    text = re.sub(r"(\s[1-5]\s+C\s+1\s+TOY\s+C[1-3]\s+\d\s+0\.0\s+)12\.011", r"\g<1>9.995", text)
    (d / "hmr.top").write_text(text)
    return d / "hmr.top"


def test_hydrogen_mass_repartitioning_keeps_hydrogens_hydrogens(toy, tmp_path):
    top = _hmr_topology(tmp_path)
    flat = read_topology(top).flat()
    masses = dict(zip(flat.names.tolist(), flat.masses.tolist()))
    assert masses["H1"] == pytest.approx(3.024) and masses["C1"] == pytest.approx(9.995)
    # one element rule: by name/type, not by mass
    assert flat.elements.tolist() == ["C", "H", "C", "H", "C", "H", "C"] * 2
    assert flat.is_heavy.tolist() == [True, False, True, False, True, False, True] * 2
    from gmx_dbm.backmap.steps import constraint_arrays
    bonds, _ = constraint_arrays(flat, "h-bonds")
    heavy = flat.is_heavy
    assert len(bonds) == 6 and all(heavy[i] != heavy[j] for i, j in bonds.tolist())   # only C-H bonds
    # generation order: heavy atoms of a bead before its hydrogens, as with the plain topology
    from gmx_dbm.mapping import read_mapping
    from gmx_dbm.model.checkpoint import load_model
    from gmx_dbm.model.recipe import FeatureSpec, Recipe
    _, meta = load_model(toy["model"])
    spec = FeatureSpec.from_dict(meta["spec"])
    plain = Recipe(read_topology(DATA / "toy.top").flat(), read_mapping([DATA / "toy.map"], read_topology(DATA / "toy.top")).flat(), spec)
    hmr = Recipe(flat, read_mapping([DATA / "toy.map"], read_topology(top)).flat(), spec)
    assert np.array_equal(plain.bead_seq, hmr.bead_seq)
    out = tmp_path / "aa.gro"
    assert main(["-q", "backmap", "-c", str(toy["cg"]), "-p", str(top), "-m", str(DATA / "toy.map"), "-o",
                 str(out), "--model", str(toy["model"]), "--gibbs", "1", "--threads", "1",
                 "--constraints", "h-bonds"]) == 0
    fr = read_frame(out)
    ch = [(0, 1), (2, 3), (4, 5)]
    from gmx_dbm.geometry import minimum_image
    for i, j in ch:
        assert np.linalg.norm(minimum_image(fr.positions[j] - fr.positions[i], fr.box)) == pytest.approx(0.110, abs=2e-3)
