"""Term-by-term agreement of gmx_dbm's force field with `gmx mdrun -rerun` (GROMACS is mixed precision:
relative tolerance 1e-4 plus a small absolute floor for near-zero terms)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gmx_dbm.ff.forcefield import GROMACS_TERMS, ForceField, NonbondedSettings
from gmx_dbm.gromacs import rerun_energies
from gmx_dbm.io import AtomInfo, Frame, read_frames, write_frames
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
REL, ABS = 1e-4, 2e-4


def compare(gmx, top, conf, workdir, settings, traj=None, defines=None, include_dirs=None, expect=(), maxwarn=0):
    """Run both, assert agreement per term and frame; return max relative deviation per term."""
    ref = rerun_energies(top, conf, workdir, settings, traj=traj, defines=tuple(defines or ()), gmx=gmx,
                         maxwarn=maxwarn)
    system = read_topology(top, defines=defines, include_dirs=include_dirs)
    ff = ForceField(system.flat(), settings)
    frames = list(read_frames(traj or conf))
    x = torch.tensor(np.stack([f.positions for f in frames]))
    box = torch.tensor(np.stack([f.box for f in frames]))
    ours = ff(x, box)
    devs = {}
    for key, names in GROMACS_TERMS.items():
        if key not in ours:
            continue
        want = sum(ref[n] for n in names if n in ref) if any(n in ref for n in names) else np.zeros(len(frames))
        got = ours[key].detach().numpy()
        assert got.shape == want.shape, (key, got.shape, want.shape)
        dev = np.abs(got - want)
        assert np.all(dev <= REL * np.abs(want) + ABS), f"{key}: ours {got} GROMACS {want}"
        devs[key] = float(np.max(dev / np.maximum(np.abs(want), 1e-12)))
    for key in expect:   # the case must really exercise these terms
        assert np.all(np.abs(ours[key].detach().numpy()) > 1e-3), f"{key} is zero: case does not test it"
    print(devs)
    return devs


@pytest.fixture()
def sps_copy(shared_data, tmp_path):
    """The shared sPS topology in a temporary folder with the posres.itp it #includes unconditionally
    (at the end of [ atoms ]) written empty."""
    d = tmp_path / "sps"
    d.mkdir()
    for name in ("topol.top", "topol_PS1.itp"):
        shutil.copy(shared_data / "sps" / name, d / name)
    (d / "posres.itp").write_text("; empty\n")
    return d


@pytest.mark.gromacs
def test_sps_reference_topology(gmx, shared_data, sps_copy, tmp_path):
    compare(gmx, sps_copy / "topol.top", shared_data / "sps" / "aa.gro", tmp_path / "run",
            NonbondedSettings(epsilon_rf=2.5), expect=("bond", "angle", "proper", "improper", "lj_sr", "coulomb_sr"))


@pytest.mark.gromacs
def test_sps_reference_frames_xtc(gmx, shared_data, sps_copy, tmp_path):
    frames = [f for _, f in zip(range(3), read_frames(shared_data / "sps" / "t568_train" / "aa.xtc"))]
    first = next(read_frames(shared_data / "sps" / "aa.gro"))
    traj = tmp_path / "three.xtc"
    write_frames(traj, first.atoms, frames)
    compare(gmx, sps_copy / "topol.top", shared_data / "sps" / "aa.gro", tmp_path / "run",
            NonbondedSettings(epsilon_rf=2.5), traj=traj)


@pytest.mark.gromacs
@pytest.mark.parametrize("name, frame", [("sps", "sps/aa.gro"),
                                         ("octane", "octane/octane_t350_10/aa/350.gro"),
                                         ("cumene", "cumene/cumene_t350_6/aa/400.gro")])
def test_project_topologies_match_gromacs(gmx, shared_data, tmp_path, name, frame):
    compare(gmx, ROOT / "topologies" / f"{name}.top", shared_data / frame, tmp_path / "run",
            NonbondedSettings(epsilon_rf=2.5), expect=("bond", "angle", "proper", "lj_sr"))


# ------------------------------------------------------------------ generated cases
def _perp(u):
    a = np.array([1.0, 0, 0]) if abs(u[0]) < 0.9 else np.array([0, 1.0, 0])
    p = np.cross(u, a)
    p /= np.linalg.norm(p)
    return p, np.cross(u, p)


def _rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def butane_template():
    """United heavy-atom zig-zag plus tetrahedral hydrogens: order C1 H H H C2 H H C3 H H C4 H H H."""
    t = math.radians(109.47)
    c = [np.array([0.0, 0, 0]), np.array([0.153, 0, 0])]
    for k in range(2):
        d = c[-1] - c[-2]
        ang = math.pi - t
        sgn = 1 if k % 2 == 0 else -1
        rot = np.array([[math.cos(ang), -sgn * math.sin(ang), 0], [sgn * math.sin(ang), math.cos(ang), 0], [0, 0, 1]])
        c.append(c[-1] + rot @ d)
    out = []
    for k, ck in enumerate(c):
        nbs = [c[j] for j in (k - 1, k + 1) if 0 <= j < 4]
        if len(nbs) == 1:
            u = (ck - nbs[0]) / np.linalg.norm(ck - nbs[0])
            p, q = _perp(u)
            dirs = [u / 3 + math.sqrt(8 / 9) * (p * math.cos(a) + q * math.sin(a)) for a in (0, 2.094, 4.189)]
        else:
            a = (ck - nbs[0]) / np.linalg.norm(ck - nbs[0]) + (ck - nbs[1]) / np.linalg.norm(ck - nbs[1])
            a /= np.linalg.norm(a)
            b = np.cross(nbs[0] - ck, nbs[1] - ck)
            b /= np.linalg.norm(b)
            h = math.radians(54.75)
            dirs = [a * math.cos(h) + b * math.sin(h), a * math.cos(h) - b * math.sin(h)]
        out.append(ck)
        out += [ck + 0.109 * d for d in dirs]
    return np.array(out)


def molecule_box(template, n_side, spacing, box, seed=1):
    rng = np.random.default_rng(seed)
    centre = template.mean(0)
    pos = []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                r = _rotation(rng)
                origin = (np.array([i, j, k]) + 0.5) * spacing
                pos.append((template - centre) @ r.T + origin)
    return np.concatenate(pos), np.asarray(box, dtype=float)


BUTANE_OPLS = """#include "oplsaa.ff/forcefield.itp"
[ moleculetype ]
BUT 3
[ atoms ]
 1 opls_135 1 BUT C1 1 -0.18
 2 opls_140 1 BUT H11 1 0.06
 3 opls_140 1 BUT H12 1 0.06
 4 opls_140 1 BUT H13 1 0.06
 5 opls_136 1 BUT C2 2 -0.12
 6 opls_140 1 BUT H21 2 0.06
 7 opls_140 1 BUT H22 2 0.06
 8 opls_136 1 BUT C3 3 -0.12
 9 opls_140 1 BUT H31 3 0.06
10 opls_140 1 BUT H32 3 0.06
11 opls_135 1 BUT C4 4 -0.18
12 opls_140 1 BUT H41 4 0.06
13 opls_140 1 BUT H42 4 0.06
14 opls_140 1 BUT H43 4 0.06
[ bonds ]
{bonds}
[ pairs ]
{pairs}
[ angles ]
{angles}
[ dihedrals ]
{dihedrals}
[ system ]
butane
[ molecules ]
BUT {count}
"""


def _butane_top(count):
    import itertools

    import networkx as nx
    g = nx.Graph([(1, 2), (1, 3), (1, 4), (1, 5), (5, 6), (5, 7), (5, 8), (8, 9), (8, 10), (8, 11),
                  (11, 12), (11, 13), (11, 14)])
    angles = [(i, j, k) for j in sorted(g) for i, k in itertools.combinations(sorted(g[j]), 2)]
    dih = []
    for j, k in g.edges:
        for i in g[j]:
            for l in g[k]:
                if i != k and l != j:
                    dih.append((i, j, k, l))
    sp = dict(nx.all_pairs_shortest_path_length(g))
    pairs = sorted({(min(a, b), max(a, b)) for a in g for b in g if sp[a][b] == 3})
    fmt = lambda rows, f: "\n".join(" ".join(map(str, r)) + f" {f}" for r in rows)
    return BUTANE_OPLS.format(bonds=fmt(sorted(g.edges), 1), pairs=fmt(pairs, 1), angles=fmt(angles, 1),
                              dihedrals=fmt(dih, 3), count=count)


@pytest.mark.gromacs
def test_oplsaa_butane_gen_pairs_rb(gmx, tmp_path):
    """GROMACS' own oplsaa.ff: comb-rule 3, gen-pairs with fudge 0.5, bonded types, RB dihedrals."""
    (tmp_path / "but.top").write_text(_butane_top(27))
    x, box = molecule_box(butane_template(), 3, 1.0, np.diag([3.0, 3.0, 3.0]))
    names = ["C1", "H11", "H12", "H13", "C2", "H21", "H22", "C3", "H31", "H32", "C4", "H41", "H42", "H43"] * 27
    atoms = AtomInfo(names, ["BUT"] * len(names), np.repeat(np.arange(1, 28), 14))
    write_frames(tmp_path / "but.gro", atoms, [Frame(x, box)])
    compare(gmx, tmp_path / "but.top", tmp_path / "but.gro", tmp_path / "run", NonbondedSettings(epsilon_rf=0.0),
            expect=("bond", "angle", "proper", "lj_sr", "lj_14", "coulomb_sr", "coulomb_14"))


@pytest.mark.gromacs
def test_gromos54a7_atb_octane_g96(gmx, shared_data, tmp_path):
    """GROMACS' gromos54a7.ff with the ATB octane molecule (G96 bonds and angles, nrexcl 3)."""
    (tmp_path / "oct.top").write_text(
        f'#include "gromos54a7.ff/forcefield.itp"\n#include "{shared_data}/octane/L49C.itp"\n'
        "[ system ]\noctane\n[ molecules ]\nL49C 215\n")
    compare(gmx, tmp_path / "oct.top", shared_data / "octane" / "octane_t350_10" / "aa" / "350.gro", tmp_path / "run",
            NonbondedSettings(epsilon_rf=62.0), expect=("bond", "angle", "proper", "lj_sr", "coulomb_sr"),
            maxwarn=1)  # grompp's generic GROMOS twin-range warning


SYNTH = """; every supported function, parameters inline and from type tables (comb-rule 1)
[ defaults ]
1 1 no 1.0 0.8
[ atomtypes ]
A 12.0 0.2 A 2.0e-3 2.0e-6
B 14.0 -0.15 A 3.0e-3 4.0e-6
C 16.0 -0.15 A 1.5e-3 1.0e-6
[ nonbond_params ]
A C 1 2.5e-3 3.0e-6
[ pairtypes ]
A A 1 1.0e-3 1.0e-6
B B 1 1.5e-3 2.0e-6
C C 1 0.8e-3 0.5e-6
[ bondtypes ]
C A 1 0.15 250000
A B 2 0.16 1.2e7
B C 1 0.14 300000
[ angletypes ]
C A B 1 110.0 400
A B C 2 115.0 500
B C A 1 120.0 450
[ dihedraltypes ]
X A B X 1 10.0 3.5 2
A B C A 9 20.0 3.0 3
A B C A 9 0.0 1.0 1
A A 2 5.0 50.0
[ moleculetype ]
SYN 3
[ atoms ]
1 A 1 SYN A1 1
2 B 1 SYN B2 1
3 C 1 SYN C3 1
4 A 1 SYN A4 1
5 B 1 SYN B5 1
6 C 1 SYN C6 1
7 A 1 SYN A7 1
[ bonds ]
1 2 1 0.15 200000
2 3 2 0.15 1.0e7
3 4 1
4 5 2
5 6 1
6 7 2 0.16 1.1e7
[ angles ]
1 2 3 1 112.0 300
2 3 4 2 118.0 420
3 4 5 1
4 5 6 2
5 6 7 1
[ dihedrals ]
1 2 3 4 9 0.0 2.0 1
1 2 3 4 9 180.0 1.5 2
2 3 4 5 3 1.0 -0.5 0.3 0.2 -0.1 0.05
3 4 5 6 1
4 5 6 7 9
1 2 3 4 2 10.0 40.0
2 3 4 5 4 30.0 2.5 2
4 5 6 7 2
[ pairs ]
1 4 1 1.2e-3 1.1e-6
2 5 1
3 6 1
4 7 1
[ exclusions ]
1 7
[ system ]
synthetic
[ molecules ]
SYN {count}
"""


@pytest.mark.gromacs
def test_synthetic_all_functions_triclinic(gmx, tmp_path):
    (tmp_path / "syn.top").write_text(SYNTH.format(count=27))
    rng = np.random.default_rng(7)
    chain = np.cumsum(rng.normal(size=(7, 3)) * 0.06 + np.array([0.1, 0.08, 0.0]), axis=0)
    box = np.array([[3.6, 0, 0], [0.6, 3.5, 0], [0.4, -0.5, 3.4]])
    x, _ = molecule_box(chain, 3, 1.15, box, seed=3)
    names = ["A1", "B2", "C3", "A4", "B5", "C6", "A7"] * 27
    atoms = AtomInfo(names, ["SYN"] * len(names), np.repeat(np.arange(1, 28), 7))
    write_frames(tmp_path / "syn.gro", atoms, [Frame(x, box)])
    settings = NonbondedSettings(epsilon_rf=10.0)
    devs = compare(gmx, tmp_path / "syn.top", tmp_path / "syn.gro", tmp_path / "run", settings,
                   expect=("bond", "angle", "proper", "improper", "lj_sr", "lj_14", "coulomb_sr", "coulomb_14"))
    assert set(devs) >= {"bond", "angle", "proper", "improper", "lj_sr", "lj_14"}
