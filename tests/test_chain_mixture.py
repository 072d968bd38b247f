"""sPS of several chain lengths cut from the 10-mer melt (scripts/make_chain_mixture.py) and its small
fixture tests/data/sps_mix: topology, bonded geometry of the capped chain ends, and that the script
reproduces the committed files from the shared data."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.geometry import WholePlan
from gmx_dbm.gromacs import run_gmx
from gmx_dbm.io import read_frame
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_chain_mixture.py"
MIX = ROOT / "tests" / "data" / "sps_mix"
FIXTURE_ARGS = ["--n-frames", "1", "--chains", "0,1", "--cut", "1"]
# the capping hydrogens: the new end H of the 3-mer, the new start H of the 6-mer
CAPS = {("PS3", "H50"), ("PS6", "H97")}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_chain_mixture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def mix():
    system = read_topology(MIX / "topol.top")
    return system, system.flat(), read_frame(MIX / "aa.gro", n_atoms=system.n_atoms)


def test_fixture_topology(mix):
    system, flat, frame = mix
    assert {k: v.n_atoms for k, v in system.moleculetypes.items()} == {"PS10": 162, "PS3": 50, "PS6": 98}
    assert system.molecules == [("PS10", 1), ("PS3", 1), ("PS6", 1)]
    assert list(frame.atoms.names) == list(flat.names)
    n_bonds = np.bincount(flat.bond_list()[0].ravel(), minlength=flat.n_atoms)
    assert (n_bonds[flat.types == "C"] == 4).all() and (n_bonds[flat.types == "C_AR"] == 3).all()
    assert (n_bonds[np.isin(flat.types, ("H", "H_AR"))] == 1).all()


def test_fixture_bonded_geometry(mix):
    _, flat, frame = mix
    idx, b0 = flat.bond_list()
    pos = WholePlan(flat.n_atoms, idx).apply(frame.positions, frame.box)
    d = np.linalg.norm(pos[idx[:, 0]] - pos[idx[:, 1]], axis=1)
    assert np.abs(d - b0).max() < 0.02
    cap = np.array([(flat.mol_type[m], n) in CAPS for m, n in zip(flat.mol_index, flat.names)])
    assert cap.sum() == 2
    on_cap = cap[idx].any(axis=1)
    assert on_cap.sum() == 2 and np.abs(d[on_cap] - b0[on_cap]).max() < 0.002   # placed at b0; .gro rounding
    # the cap's angles at its carbon stay near the tetrahedral theta0 (no strain from the cut)
    angles, theta0 = flat.bonded["angles"][1]
    with_cap = cap[angles].any(axis=1)
    u = pos[angles[with_cap, 0]] - pos[angles[with_cap, 1]]
    v = pos[angles[with_cap, 2]] - pos[angles[with_cap, 1]]
    theta = np.degrees(np.arccos(np.sum(u * v, axis=1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)))
    assert with_cap.sum() == 6 and np.abs(theta - theta0[with_cap, 0]).max() < 20


def test_xtc_holds_the_gro_frame(mix):
    _, _, frame = mix
    xtc = read_frame(MIX / "aa.xtc", n_atoms=frame.n_atoms)
    assert np.abs(xtc.positions - frame.positions).max() <= 0.0011


def test_grompp_accepts_fixture(gmx, tmp_path):
    (tmp_path / "em.mdp").write_text("integrator = steep\nnsteps = 0\ncutoff-scheme = Verlet\nrvdw = 1.0\n"
                                     "rcoulomb = 1.0\ncoulombtype = reaction-field\nepsilon-rf = 2.5\n"
                                     "constraints = none\n")
    run_gmx(["grompp", "-f", "em.mdp", "-c", MIX / "aa.gro", "-p", MIX / "topol.top", "-o", "em.tpr"],
            cwd=tmp_path, gmx=gmx)
    assert (tmp_path / "em.tpr").is_file()


@pytest.mark.parametrize("delete, lengths", [(4, (3, 6)), (3, (2, 7)), (8, (7, 2)), (1, (9,)), (10, (9,))])
def test_cutting_follows_sps_n(script, delete, lengths):
    """Every cut the script allows gives chains whose bonds and types are those of sps(n) (checked inside)."""
    system = read_topology(ROOT / "topologies" / "sps.top")
    mixture = script.plan_mixture(system, [0, 1, 2], [1, 2], delete)
    assert mixture.counts() == [("PS10", 1)] + [(f"PS{n}", 2) for n in lengths]


def test_cut_leaving_a_monomer_is_refused(script):
    system = read_topology(ROOT / "topologies" / "sps.top")
    with pytest.raises(ValueError, match="at least 2 monomers"):
        script.plan_mixture(system, [0], [0], 2)


def test_regenerated_from_shared_data(shared_data, tmp_path):
    frames = shared_data / "sps" / "t453" / "aa.xtc"
    if not frames.is_file():
        pytest.skip(f"{frames} not found in the reference data")
    out = tmp_path / "sps_mix"
    subprocess.run([sys.executable, str(SCRIPT), "--frames", str(frames), "--out", str(out), *FIXTURE_ARGS],
                   check=True, cwd=ROOT, capture_output=True)
    committed = sorted(p.name for p in MIX.iterdir() if p.name != "README.md")
    assert sorted(p.name for p in out.iterdir()) == committed
    for name in committed:
        if name == "topol.top":   # the force-field include is relative to where the file is written
            def body(text):
                return [line for line in text.splitlines() if "forcefield.itp" not in line]
            assert body((out / name).read_text()) == body((MIX / name).read_text())
        else:
            assert (out / name).read_bytes() == (MIX / name).read_bytes(), name


def test_equilibrate_melt_writes_frames_after_the_equilibration(gmx, tmp_path):
    """scripts/equilibrate_melt.py on the small fixture: real grompp + mdrun, 2.6 ps discarded, 1.8 ps sampled."""
    out = tmp_path / "eq"
    # 0.6 ps between frames does not divide the 2.6 ps discarded: the first frame kept is the one at 3.0 ps
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "equilibrate_melt.py"),
                           "--top", str(MIX / "topol.top"), "--conf", str(MIX / "aa.gro"), "--out", str(out),
                           "--equilibrate", "2.6", "--sample", "1.8", "--every", "0.6", "--threads", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    system = read_topology(MIX / "topol.top")
    from gmx_dbm.io import read_frames
    frames = list(read_frames(out / "aa.xtc", n_atoms=system.n_atoms))
    assert [round(f.time, 3) for f in frames] == [3.0, 3.6, 4.2]
    # every bond held at its length by the constraints (minimum-image bond vectors)
    from gmx_dbm.metrics import bond_lengths
    bonds, b0 = system.flat().bond_list()
    lengths = bond_lengths(np.stack([f.positions for f in frames]), np.stack([f.box for f in frames]), bonds)
    assert np.abs(lengths - b0[None]).max() < 0.002
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    # four quarters of the equilibration, two halves of the sampled part, each with a frame; the last
    # window against itself
    assert len(rows) == 6 and "no frame" not in proc.stdout
    assert rows[-1].rstrip(" |").endswith("0.0000")
    assert read_frame(out / "aa.gro", n_atoms=system.n_atoms).n_atoms == system.n_atoms
