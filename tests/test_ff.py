"""Torch force field: geometry conventions, kernels, neighbour search, gradients, periodic invariance."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from gmx_dbm.ff import functional as F
from gmx_dbm.ff.forcefield import ForceField, NonbondedSettings, neighbor_pairs, read_mdp_settings
from gmx_dbm.ff.geometry import dihedral, minimum_image
from gmx_dbm.errors import ConfigError
from gmx_dbm.io.topology import read_topology

SMALL = """
[ defaults ]
1 2 no 1.0 1.0
[ atomtypes ]
A 12 0.3 A 0.30 0.40
B 14 -0.3 A 0.32 0.30
[ moleculetype ]
M 2
[ atoms ]
1 A 1 M A1 1
2 B 1 M B2 1
3 A 1 M A3 1
4 B 1 M B4 1
[ bonds ]
1 2 1 0.15 2000
2 3 2 0.15 90000
3 4 1 0.15 2000
[ angles ]
1 2 3 1 110 50
2 3 4 2 115 40
[ dihedrals ]
1 2 3 4 9 0 3 3
1 2 3 4 9 30 1 1
1 2 3 4 2 10 20
1 2 3 4 3 1 -0.5 0.3 0.2 -0.1 0.05
[ pairs ]
1 4 1 0.3 0.2
[ molecules ]
M 6
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    p = tmp_path_factory.mktemp("ff") / "s.top"
    p.write_text(textwrap.dedent(SMALL))
    return read_topology(p).flat()


def small_frame(seed=0):
    rng = np.random.default_rng(seed)
    box = np.array([[2.1, 0, 0], [0.3, 2.0, 0], [-0.2, 0.4, 1.9]])
    chain = np.cumsum(rng.normal(size=(4, 3)) * 0.05 + 0.08, axis=0)
    x = np.concatenate([chain + rng.uniform(-3, 3, size=3) for _ in range(6)])   # molecules broken over pbc
    return torch.tensor(x), torch.tensor(box)


def test_dihedral_sign_convention():
    # cis = 0, trans = pi, and the IUPAC sign (clockwise looking down j->k is positive)
    def phi(l):
        xi, xj, xk, xl = (torch.tensor(v, dtype=torch.float64) for v in ([1, 0, 0], [0, 0, 0], [0, 0, 1], l))
        return float(dihedral(xi - xj, xk - xj, xk - xl))
    assert phi([1, 0, 1]) == pytest.approx(0.0)
    assert abs(phi([-1, 0, 1])) == pytest.approx(math.pi)
    assert phi([0, 1, 1]) == pytest.approx(math.pi / 2)
    assert phi([0, -1, 1]) == pytest.approx(-math.pi / 2)


def test_kernels_gromacs_forms():
    t = torch.tensor
    assert float(F.harmonic_improper(t(math.radians(-175.0)), 175.0, 2.0)) == pytest.approx(0.5 * 2 * math.radians(10) ** 2)
    assert float(F.periodic_dihedral(t(0.3), 0.0, 2.0, 2.0)) == pytest.approx(2 * (1 + math.cos(0.6)))
    assert float(F.g96_bond(t(0.2), 0.1, 4.0)) == pytest.approx(0.25 * 4 * (0.04 - 0.01) ** 2)
    c = t([1.0, 2.0, 3.0, 0.0, 0.0, 0.0])
    psi = math.pi / 3 - math.pi
    assert float(F.ryckaert_bellemans(t(math.pi / 3), c)) == pytest.approx(1 + 2 * math.cos(psi) + 3 * math.cos(psi) ** 2)
    v = F.lennard_jones(t([0.5 ** 2, 1.0, 1.1 ** 2]), 1e-3, 1e-6, cutoff=1.0)
    assert float(v[1]) == pytest.approx(0.0, abs=1e-15) and float(v[2]) == 0.0


def test_neighbor_pairs_match_brute_force():
    rng = np.random.default_rng(3)
    box = torch.tensor([[3.3, 0, 0], [0.7, 3.1, 0], [-0.6, 1.2, 3.2]], dtype=torch.float64)
    x = torch.tensor(rng.uniform(0, 1, size=(700, 3))) @ box
    i, j = neighbor_pairs(x, box, 1.0, block=5000)
    got = set(zip(i.tolist(), j.tolist()))
    d = minimum_image((x[None, :, None] - x[None, None, :]), box[None])[0]
    r = torch.linalg.vector_norm(d, dim=-1)
    ii, jj = torch.nonzero((r < 1.0) & torch.triu(torch.ones_like(r, dtype=torch.bool), 1), as_tuple=True)
    assert got == set(zip(ii.tolist(), jj.tolist()))
    assert len(i) == len(got)   # no duplicates


def test_gradcheck(small):
    ff = ForceField(small, NonbondedSettings(cutoff=0.9, rcoulomb=0.9, epsilon_rf=3.0))
    x, box = small_frame()

    def energy(pos):
        return torch.stack(list(ff(pos[None], box[None]).values())).sum(0)
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(energy, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
    terms = ff(x[None], box[None])
    for key in ("bond", "angle", "proper", "improper", "lj_sr", "lj_14", "coulomb_sr", "coulomb_14"):
        assert float(terms[key].detach().abs()) > 0, key


def test_periodic_invariance_and_batching(small):
    ff = ForceField(small, NonbondedSettings(cutoff=0.9, rcoulomb=0.9))
    x, box = small_frame(1)
    e0 = ff(x[None], box[None])
    shifted = x + torch.tensor([0.37, -1.1, 2.3], dtype=torch.float64)
    frac = shifted @ torch.linalg.inv(box)
    wrapped = (frac - torch.floor(frac)) @ box
    lattice = x + torch.tensor([1, -2, 1], dtype=torch.float64) @ box   # whole-box-vector shift
    e = ff(torch.stack([x, shifted, wrapped, lattice]), box.expand(4, 3, 3))
    for k, v in e0.items():
        assert torch.allclose(e[k], v.expand(4), rtol=1e-10, atol=1e-9), k


def test_float32_close_to_float64(small):
    x, box = small_frame(2)
    e64 = ForceField(small, dtype=torch.float64)(x[None], box[None])
    e32 = ForceField(small, dtype=torch.float32)(x[None].float(), box[None].float())
    for k in e64:
        assert float(e32[k]) == pytest.approx(float(e64[k]), rel=1e-3, abs=1e-3), k


def test_read_mdp_settings(tmp_path):
    p = tmp_path / "a.mdp"
    p.write_text("cutoff_scheme = Verlet\nrvdw = 1.2\nrcoulomb=1.2\ncoulombtype = Reaction-Field\n"
                 "epsilon_rf = 2.5 ; comment\nvdw-modifier = None\n")
    s = read_mdp_settings(p)
    assert (s.cutoff, s.rcoulomb, s.coulomb, s.epsilon_rf, s.modifier) == (1.2, 1.2, "reaction-field", 2.5, "none")
    p.write_text("rvdw = 1.0\ncoulombtype = PME\n")
    with pytest.raises(ConfigError, match=r"a.mdp:2: coulombtype PME not supported"):
        read_mdp_settings(p)
