"""Torch force field: geometry conventions, kernels, neighbour search, gradients, periodic invariance."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from gmx_dbm.ff import functional as F
from gmx_dbm.energy import read_mdp_settings
from gmx_dbm.ff.forcefield import ForceField, NonbondedSettings
from gmx_dbm.ff.geometry import dihedral, minimum_image, minimum_image_exact
from gmx_dbm.errors import ConfigError, InputError
from gmx_dbm.topology import read_topology

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


def _brute_force_distances(x, box, images=2):
    """(N, N) shortest distances over every lattice image within +-images box vectors (no reduction)."""
    r = np.arange(-images, images + 1)
    shifts = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ box
    d = x[None, :, None, :] - x[:, None, None, :] + shifts[None, None]
    return np.sqrt((d * d).sum(-1)).min(-1)


def test_force_field_pairs_match_brute_force(small):
    """The force field's pair list is every non-excluded pair within the cut-off, checked against an
    explicit sum over lattice images (no minimum-image reduction involved)."""
    rng = np.random.default_rng(3)
    box = np.array([[3.3, 0, 0], [0.7, 3.1, 0], [-0.6, 1.2, 3.2]])
    x = rng.uniform(0, 1, size=(small.n_atoms, 3)) @ box
    ff = ForceField(small, NonbondedSettings(cutoff=1.0, rcoulomb=1.0))
    i, j = ff.pairs(torch.tensor(x), torch.tensor(box))
    got = set(zip(i.tolist(), j.tolist()))
    r = _brute_force_distances(x, box)
    excl = {tuple(e) for e in small.exclusions.tolist()}
    want = {(a, b) for a, b in zip(*np.nonzero(np.triu(r < 1.0, 1))) if (a, b) not in excl}
    assert got == want and len(i) == len(got)


def test_exact_minimum_image_beyond_half_the_box():
    """In a triclinic box shaped like the sPS melt's, a vector longer than half the smallest height comes
    back at its true shortest image (the plain c-b-a reduction returns a longer one)."""
    box = np.array([[7.843, 0, 0], [1.30, 2.269, 0], [0.9, 1.0, 2.254]])
    rng = np.random.default_rng(0)
    d = rng.uniform(-3, 3, size=(2000, 3))
    got = np.linalg.norm(minimum_image_exact(torch.tensor(d), torch.tensor(box)).numpy(), axis=-1)
    r = np.arange(-3, 4)
    shifts = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ box
    want = np.linalg.norm(d[:, None] + shifts[None], axis=-1).min(1)
    assert np.allclose(got, want)
    plain = np.linalg.norm(minimum_image(torch.tensor(d)[None], torch.tensor(box)[None])[0].numpy(), axis=-1)
    assert (plain > want + 1e-9).any()   # the case the exact version exists for


def test_box_thinner_than_twice_the_cutoff_is_refused(small):
    """As grompp: a cut-off longer than half the smallest box height is an error, not missed pairs."""
    ff = ForceField(small, NonbondedSettings(cutoff=1.0, rcoulomb=1.0))
    x, _ = small_frame()
    thin = torch.tensor([[1.9, 0, 0], [0, 1.9, 0], [0, 0, 3.0]], dtype=torch.float64)
    with pytest.raises(InputError, match="longer than half the smallest box height"):
        ff.energies(x, thin)
    with pytest.raises(InputError):
        ff(x[None], thin[None])


def test_energies_on_given_pairs_equal_the_full_search(small):
    ff = ForceField(small, NonbondedSettings(cutoff=0.9, rcoulomb=0.9, epsilon_rf=3.0))
    x, box = small_frame(4)
    full = ff.energies(x, box)
    pairs = ff.pairs(x, box)
    assert ff.energies(x, box, pairs=pairs) == pytest.approx(full, rel=1e-12, abs=1e-12)
    lj, c = ff.pair_energies(x, box, *pairs)
    assert float(lj.sum()) == pytest.approx(full["lj_sr"], rel=1e-12)
    # dropping the pairs changes lj_sr: the pairs argument is really used
    assert ff.energies(x, box, pairs=(pairs[0][:0], pairs[1][:0]))["lj_sr"] == 0.0


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
    s = NonbondedSettings(cutoff=0.9, rcoulomb=0.9)
    e64 = ForceField(small, s, dtype=torch.float64)(x[None], box[None])
    e32 = ForceField(small, s, dtype=torch.float32)(x[None].float(), box[None].float())
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


def test_analytic_bonded_forces_equal_autograd(small):
    """``bonded_forces`` (one kernel per term returning energy and forces) equals minus the autograd
    gradient of ``bonded_terms``, for every bonded function of the topology, with the minimum images
    found per call or given once (``bonded_images``)."""
    ff = ForceField(small, NonbondedSettings(cutoff=0.9, rcoulomb=0.9))
    for seed in range(3):
        x, box = small_frame(seed)
        xg = x.clone().requires_grad_(True)
        terms = ff.bonded_terms(xg[None], box[None])
        (grad,) = torch.autograd.grad(sum(v[0] for v in terms.values()), xg)
        for images in (None, ff.bonded_images(x, box)):
            energies, forces = ff.bonded_forces(x, box, images)
            assert energies.keys() == terms.keys()
            for k in terms:
                assert float(energies[k]) == pytest.approx(float(terms[k][0].detach()), rel=1e-12, abs=1e-12), k
            assert torch.allclose(forces, -grad, rtol=1e-10, atol=1e-9)
    # float32 (the thermalisation's dtype) to float tolerance
    ff32 = ForceField(small, NonbondedSettings(cutoff=0.9, rcoulomb=0.9), dtype=torch.float32)
    x, box = small_frame(1)
    _, f64 = ff.bonded_forces(x, box)
    _, f32 = ff32.bonded_forces(x.float(), box.float())
    assert torch.allclose(f32.double(), f64, rtol=1e-3, atol=1e-4 * float(f64.abs().max()))


def test_pairs_exact_in_a_box_beyond_gromacs_shape_limits(small):
    """A box more skewed than GROMACS allows (|b_x| > a_x / 2): the pair search and the pair vectors
    still find every pair at its true minimum image (the brick reduction alone would miss some)."""
    rng = np.random.default_rng(8)
    box = np.array([[3.0, 0, 0], [2.2, 3.0, 0], [-1.9, 2.0, 3.1]])
    x = rng.uniform(0, 1, size=(small.n_atoms, 3)) @ box
    ff = ForceField(small, NonbondedSettings(cutoff=0.8, rcoulomb=0.8))
    i, j = ff.pairs(torch.tensor(x), torch.tensor(box))
    r = _brute_force_distances(x, box)
    excl = {tuple(e) for e in small.exclusions.tolist()}
    want = {(a, b) for a, b in zip(*np.nonzero(np.triu(r < 0.8, 1))) if (a, b) not in excl}
    assert set(zip(i.tolist(), j.tolist())) == want
    lj, _ = ff.pair_energies(torch.tensor(x), torch.tensor(box), i, j)
    c6 = ff.c6[ff.type_index[i], ff.type_index[j]]
    c12 = ff.c12[ff.type_index[i], ff.type_index[j]]
    d2 = torch.tensor(r[i.numpy(), j.numpy()]) ** 2
    assert torch.allclose(lj, F.lj_pair(d2, c6, c12, 0.8)[0], rtol=1e-10, atol=1e-12)


def test_device_argument_places_the_tables(small):
    ff = ForceField(small, NonbondedSettings(cutoff=0.9, rcoulomb=0.9), device="cpu")
    assert ff.device == torch.device("cpu") and ff.c6.device.type == "cpu"
    x, box = small_frame(3)
    i, j = ff.pairs(x.numpy(), box.numpy())
    assert i.device.type == "cpu" and i.dtype == torch.int64


@pytest.mark.gpu
def test_force_field_on_cuda_equals_cpu(small):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    s = NonbondedSettings(cutoff=0.9, rcoulomb=0.9)
    x, box = small_frame(2)
    cpu = ForceField(small, s)(x[None], box[None])
    ff = ForceField(small, s, device="cuda")
    gpu = ff(x[None].cuda(), box[None].cuda())
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        assert float(gpu[k]) == pytest.approx(float(cpu[k]), rel=1e-10, abs=1e-9), k
    e, f = ff.bonded_forces(x.cuda(), box.cuda())
    assert f.device.type == "cuda"
