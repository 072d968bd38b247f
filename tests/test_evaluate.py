"""gmx_dbm evaluate: synthetic checks, bad inputs, outputs, and the published sPS table (shared data)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gmx_dbm import evaluate as E
from gmx_dbm import metrics
from gmx_dbm.cli import main
from gmx_dbm.errors import InputError, TrajectoryError
from gmx_dbm.ff.forcefield import ForceField
from gmx_dbm.io import AtomInfo, Frame, write_frames
from gmx_dbm.topology import read_topology

TOP = """[ defaults ]
  1  2  no  1.0  1.0
[ atomtypes ]
  C  12.011  0.000  A  0.320  0.350
  H   1.008  0.000  A  0.230  0.300
[ moleculetype ]
  BUT  3
[ atoms ]
  1 C 1 BUT C1 1  0.10 12.011
  2 C 1 BUT C2 1 -0.10 12.011
  3 C 1 BUT C3 2  0.10 12.011
  4 C 1 BUT C4 2 -0.10 12.011
  5 H 1 BUT H5 3  0.00  1.008
[ bonds ]
  1 2 1 0.153 200000
  2 3 1 0.153 200000
  3 4 1 0.153 200000
  2 5 1 0.110 200000
[ angles ]
  1 2 3 1 111.0 400
  2 3 4 1 111.0 400
  1 2 5 1 109.5 300
  3 2 5 1 109.5 300
[ dihedrals ]
  1 2 3 4 1 0.0 5.0 3
  2 1 3 5 2 35.0 100.0
[ system ]
toy butanes
[ molecules ]
BUT 27
"""

N_MOL = 27
BOX = np.array([[3.0, 0, 0], [0.4, 2.9, 0], [-0.3, 0.5, 2.8]])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaltoy")
    top = d / "toy.top"
    top.write_text(TOP)
    system = read_topology(top)
    flat = system.flat()
    atoms = AtomInfo.from_topology(flat)

    def molecule(rng, centre, spread):
        c1 = np.zeros(3)
        c2 = c1 + [0.153, 0, 0]
        c3 = c2 + 0.153 * np.array([np.cos(1.2), np.sin(1.2), 0])
        c4 = c3 + [0.153, 0, 0]
        h5 = c2 + [0, -0.06, 0.09]
        xyz = np.array([c1, c2, c3, c4, h5]) + rng.normal(0, spread, (5, 3))
        return xyz + centre

    def frames(seed, spread, n=4):
        rng = np.random.default_rng(seed)
        grid = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(3)], float) / 3.0
        out = []
        for f in range(n):
            centres = (grid + rng.uniform(0, 0.05, grid.shape)) @ BOX
            pos = np.concatenate([molecule(rng, c, spread) for c in centres])
            out.append(Frame(pos, BOX.copy(), time=float(f)))
        return out

    ref = d / "ref.gro"
    write_frames(ref, atoms, frames(1, 0.004))
    same = d / "same.gro"
    write_frames(same, atoms, frames(1, 0.004))
    noisy = d / "noisy.xtc"
    write_frames(noisy, atoms, frames(2, 0.02))
    return {"dir": d, "top": top, "ref": ref, "same": same, "noisy": noisy, "system": system, "flat": flat}


def test_identical_trajectories_score_zero_and_outputs(toy, tmp_path):
    rep = tmp_path / "report"
    js = tmp_path / "eval.json"
    res = E.evaluate(toy["ref"], [toy["same"], toy["noisy"]], toy["top"], report_dir=rep, json_path=js)
    same = res["candidates"]["same"]
    # the same positions in another file
    for key in ("bond_jsd", "angle_jsd", "proper_jsd", "improper_jsd", "rdf_dev"):
        assert same[key] == pytest.approx(0.0, abs=1e-12), key
    assert same["clashes_per_frame"] == 0
    noisy = res["candidates"]["noisy"]
    assert noisy["bond_jsd"] > 0.05 and noisy["angle_jsd"] > 0.01
    # per-type breakdown and per element pair RDFs
    assert set(noisy["per_type_jsd"]["bond"]) == {"C-C", "C-H"}
    assert set(noisy["rdf_dev_per_element_pair"]) == {"C-C", "C-H", "H-H"}
    assert noisy["rdf_dev_per_element_pair"]["C-C"] == noisy["rdf_dev"]
    # energies per term, the same as the plain force field
    e_ref = res["reference"]["energy"]
    assert set(e_ref) >= {"bond", "angle", "proper", "improper", "lj_sr", "coulomb_sr"}
    assert e_ref == pytest.approx(same["energy"], rel=1e-4, abs=1e-3)
    data = json.loads(js.read_text())
    for key in ("bond_jsd", "angle_jsd", "proper_jsd", "improper_jsd", "rdf_dev", "clashes_per_frame", "energy"):
        assert key in data["candidates"]["noisy"]
    assert json.loads((rep / "report.json").read_text()) == data
    for png in ("distributions.png", "rdf.png", "lj_per_molecule.png", "bond_by_type.png", "improper_by_type.png"):
        assert (rep / png).read_bytes()[:4] == b"\x89PNG"
    # a second run backs the previous outputs up, GROMACS style, and leaves no temporary files
    E.evaluate(toy["ref"], [toy["same"]], toy["top"], report_dir=rep, json_path=js, energies=False)
    assert (tmp_path / "#eval.json.1#").is_file() and (rep / "#rdf.png.1#").is_file()
    assert not [p for p in tmp_path.rglob(".*.tmp*")]


def test_frames_need_not_correspond(toy):
    """Pooled statistics: frame order is irrelevant."""
    flat = toy["flat"]
    from gmx_dbm.io import read_frames
    fr = list(read_frames(toy["noisy"]))
    ev = E.Evaluator(toy["system"], energies=False)
    a, b = ev.new_stats("a", "a"), ev.new_stats("b", "b")
    for f in fr:
        ev.add_frame(a, f.positions, f.box)
    for f in fr[::-1]:
        ev.add_frame(b, f.positions, f.box)
    s = E.score(a, b)
    assert all(s[f"{k}_jsd"] == pytest.approx(0, abs=1e-12) for k in E.KINDS)
    assert s["rdf_dev"] == pytest.approx(0, abs=1e-12)
    assert flat.n_atoms == 5 * N_MOL


def test_lj_per_molecule_adds_up_to_the_force_field_term(toy):
    """Evaluate's LJ-per-molecule split uses the force field's own pair kernel: intramolecular pairs once,
    intermolecular twice, and the pairs sum to the force field's lj_sr."""
    flat = toy["flat"]
    from gmx_dbm.io import read_frames
    f = next(iter(read_frames(toy["noisy"])))
    ff = ForceField(flat)
    with torch.no_grad():
        full = {k: float(v[0]) for k, v in ff(torch.as_tensor(f.positions)[None], torch.as_tensor(f.box)[None]).items()}
    i, j = ff.pairs(f.positions, f.box)
    lj, _ = ff.pair_energies(f.positions, f.box, i, j)
    lj, i, j = lj.numpy(), i.numpy(), j.numpy()
    assert lj.sum() == pytest.approx(full["lj_sr"], rel=1e-10)
    mol = flat.mol_index
    per = metrics.per_molecule(i, j, lj, mol, N_MOL)
    inter = lj[mol[i] != mol[j]].sum()
    assert per.sum() == pytest.approx(full["lj_sr"] + inter)
    assert inter != 0
    # and the evaluation's energies are the force field's
    ev = E.Evaluator(toy["system"])
    st = ev.new_stats("x", "x")
    ev.add_frame(st, f.positions, f.box)
    assert st.energies[0] == pytest.approx(full, rel=1e-10, abs=1e-9)


def test_bad_inputs(toy, tmp_path):
    with pytest.raises(TrajectoryError, match="file not found"):
        E.evaluate(toy["ref"], [tmp_path / "nope.xtc"], toy["top"])
    wrong = tmp_path / "wrong.gro"
    write_frames(wrong, AtomInfo(np.array(["C1"] * 3), np.array(["X"] * 3), np.arange(3)),
                 [Frame(np.zeros((3, 3)) + 1, BOX)])
    with pytest.raises(TrajectoryError) as exc:
        E.evaluate(toy["ref"], [wrong], toy["top"], energies=False)
    assert "wrong.gro" in str(exc.value) and "expected 135" in str(exc.value)
    # right count, wrong order of names
    flat = toy["flat"]
    names = flat.names.copy()
    names[[0, 4]] = names[[4, 0]]
    swapped = tmp_path / "swapped.gro"
    write_frames(swapped, AtomInfo(names, flat.resnames, flat.resids), [Frame(np.ones((flat.n_atoms, 3)), BOX)])
    with pytest.raises(TrajectoryError, match="atom 1 is named 'H5'"):
        E.evaluate(swapped, [toy["same"]], toy["top"], energies=False)
    with pytest.raises(InputError, match="no candidate"):
        E.evaluate(toy["ref"], [], toy["top"])
    # the CLI: one line, exit code 2
    assert main(["evaluate", "-r", str(toy["ref"]), "-f", str(wrong), "-p", str(toy["top"])]) == 2


def test_cli_prints_the_table(toy, tmp_path, capsys):
    js = tmp_path / "e.json"
    assert main(["evaluate", "-r", str(toy["ref"]), "-f", str(toy["same"]), "-f", str(toy["noisy"]),
                 "-p", str(toy["top"]), "--json", str(js), "--no-energies"]) == 0
    out = capsys.readouterr().out
    assert "bond JSD" in out and "noisy" in out and "floor" in out
    assert set(json.loads(js.read_text())["candidates"]) == {"same", "noisy"}


@pytest.mark.gromacs
def test_gromacs_rerun_matches_the_torch_energies(toy, gmx, monkeypatch, tmp_path):
    monkeypatch.setenv("GMX_DBM_GMX", gmx)
    res = E.evaluate(toy["ref"], [toy["noisy"]], toy["top"], rerun=True)
    for row in (res["reference"], res["candidates"]["noisy"]):
        g, t = row["energy_gromacs"], row["energy"]
        assert g["frames"] == 4
        for term in ("bond", "angle", "proper", "improper", "lj_sr", "coulomb_sr"):
            assert g[term] == pytest.approx(t[term], rel=2e-3, abs=0.05), term


# --------------------------------------------------------------------------- the published table
PUBLISHED = {  # Stieffenhofer, Wand & Bereau (2021), sPS at 453 K (78 frames)
    "deepbackmap": {"bond_jsd": 0.360, "angle_jsd": 0.024, "proper_jsd": 0.0034, "improper_jsd": 0.048,
                    "rdf_dev": 0.0042, "angle": 6851, "improper": 2024, "lj": -8607},
    "baseline": {"bond_jsd": 0.405, "angle_jsd": 0.196, "proper_jsd": 0.084, "improper_jsd": 0.190,
                 "rdf_dev": 0.021, "angle": 2760, "improper": 721, "lj": -16335},
    "reference": {"angle": 13283, "improper": 5155, "lj": -8661},
}


@pytest.mark.slow
def test_reproduces_the_published_sps_table(shared_data, root):
    t453 = shared_data / "sps" / "t453"
    res = E.evaluate(t453 / "aa.xtc", [t453 / "deepbackmap.xtc", t453 / "baseline.xtc"], root / "topologies" / "sps.top")
    for name in ("deepbackmap", "baseline"):
        got, want = res["candidates"][name], PUBLISHED[name]
        for key in ("bond_jsd", "angle_jsd", "proper_jsd", "improper_jsd", "rdf_dev"):
            assert abs(got[key] - want[key]) <= max(0.05 * want[key], 0.001), (name, key, got[key])
    for name in ("reference", "deepbackmap", "baseline"):
        row = res["reference"] if name == "reference" else res["candidates"][name]
        e, want = row["energy"], PUBLISHED[name]
        # the published energies are GROMACS reruns; the torch force field reproduces them to < 0.5%
        assert e["angle"] == pytest.approx(want["angle"], rel=0.005), name
        assert e["improper"] == pytest.approx(want["improper"], rel=0.005), name
        assert e["lj_sr"] + e["lj_14"] == pytest.approx(want["lj"], rel=0.005), name
    # sampling noise (39 vs 39 frames: proper 0.0016, RDF 0.0015, the rest ~0)
    fl = res["reference"]["floor"]
    assert fl["bond_jsd"] < 0.001 and fl["angle_jsd"] < 0.001 and fl["improper_jsd"] < 0.001
    assert fl["proper_jsd"] < 0.005 and fl["rdf_dev"] < 0.005
