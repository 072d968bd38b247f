"""Thermalisation (``gmx_dbm.ff.dynamics``): restrained BAOAB Langevin dynamics samples the force field's
Boltzmann distribution (equipartition on a system of harmonic triatomics), holds constrained bonds and
bead centres, and is deterministic for a seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from gmx_dbm.ff.dynamics import RestrainedLangevin, project_bonds
from gmx_dbm.neighbors import neighbor_pairs
from gmx_dbm.units import KB
from gmx_dbm.ff.forcefield import ForceField
from gmx_dbm.topology import read_topology

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

N_MOL = 60
TOP = """
[ defaults ]
  1  2  no  1.0  1.0
[ atomtypes ]
; tiny LJ so that the test measures the bonded terms; charges none
  O  16.0  0.0  A  0.10  0.001
  H   1.0  0.0  A  0.10  0.001
[ moleculetype ]
  TRI  2
[ atoms ]
  1  O  1  TRI  O1  1  0.0  16.0
  2  H  1  TRI  H1  1  0.0   1.0
  3  H  1  TRI  H2  1  0.0   1.0
[ bonds ]
; k as stiff as a C-H bond with the dynamics' uniform mass and 4 fs step
  1  2  1  0.10  20000.0
  1  3  1  0.10  20000.0
[ angles ]
  2  1  3  1  109.5  400.0
[ system ]
triatomics
[ molecules ]
TRI  {n}
"""


@pytest.fixture(scope="module")
def triatomics(tmp_path_factory):
    path = tmp_path_factory.mktemp("dyn") / "tri.top"
    path.write_text(TOP.format(n=N_MOL))
    flat = read_topology(path).flat()
    rng = np.random.default_rng(3)
    side = 4.0
    box = np.diag([side] * 3)
    centres = rng.uniform(0, side, (N_MOL, 3))
    # a bent start: O at the centre, hydrogens at 0.1 nm, angle 100 degrees in a random plane
    pos = []
    for c in centres:
        u = rng.normal(size=3); u /= np.linalg.norm(u)
        w = np.cross(u, rng.normal(size=3)); w /= np.linalg.norm(w)
        a = np.radians(100.0)
        pos += [c, c + 0.1 * u, c + 0.1 * (np.cos(a) * u + np.sin(a) * w)]
    pos = np.array(pos)
    rows = np.repeat(np.arange(N_MOL), 3)
    centre = sparse.csr_matrix((np.tile([16 / 18, 1 / 18, 1 / 18], N_MOL), (rows, np.arange(3 * N_MOL))),
                               shape=(N_MOL, 3 * N_MOL))
    beads = centre @ pos
    return flat, pos, box, beads, centre


def _mean_energies(flat, frames, box):
    ff = ForceField(flat)
    x = torch.as_tensor(np.array(frames))
    e = ff.bonded_terms(x, torch.as_tensor(box)[None].expand(len(frames), 3, 3))
    return {k: float(v.mean()) for k, v in e.items()}


def test_equipartition_of_bonds_and_angles(triatomics):
    flat, pos, box, beads, centre = triatomics
    temperature = 400.0
    dyn = RestrainedLangevin(flat, centre, temperature, steps=50)
    rng = torch.Generator().manual_seed(0)
    x, frames = pos, []
    for _ in range(40):  # 2000 steps, sampled every 50
        x = dyn.run(x, box, beads, rng)
        frames.append(x)
    e = _mean_energies(flat, frames[10:], box)
    kt2 = 0.5 * KB * temperature
    # one harmonic degree of freedom per bond and per angle: <E> = kT/2 (statistical error ~ 3 %)
    assert e["bond"] / (2 * N_MOL) == pytest.approx(kt2, rel=0.12)
    assert e["angle"] / N_MOL == pytest.approx(kt2, rel=0.12)


def test_constraints_and_restraints_hold(triatomics):
    flat, pos, box, beads, centre = triatomics
    bonds = np.array([[3 * m, 3 * m + k] for m in range(N_MOL) for k in (1, 2)])
    lengths = np.full(len(bonds), 0.1)
    dyn = RestrainedLangevin(flat, centre, 400.0, steps=200, bonds=bonds, lengths=lengths, k_restraint=5000.0)
    x = dyn.run(pos, box, beads, torch.Generator().manual_seed(1))
    r = np.linalg.norm(x[bonds[:, 1]] - x[bonds[:, 0]], axis=1)
    assert np.abs(r - 0.1).max() < 2e-4
    # bead centres stay within a few thermal widths sqrt(kT/k) of the CG positions
    off = np.linalg.norm(centre @ x - beads, axis=1)
    assert off.max() < 5 * np.sqrt(KB * 400.0 / 5000.0)
    # and the angles moved off the 100-degree start (the run did something)
    v1, v2 = x[1::3] - x[0::3], x[2::3] - x[0::3]
    ang = np.degrees(np.arccos((v1 * v2).sum(1) / np.linalg.norm(v1, axis=1) / np.linalg.norm(v2, axis=1)))
    assert abs(ang.mean() - 109.5) < 3.0 and ang.std() > 1.0


def test_same_seed_same_result(triatomics):
    flat, pos, box, beads, centre = triatomics
    dyn = RestrainedLangevin(flat, centre, 300.0, steps=20)
    a = dyn.run(pos, box, beads, torch.Generator().manual_seed(5))
    b = dyn.run(pos, box, beads, torch.Generator().manual_seed(5))
    c = dyn.run(pos, box, beads, torch.Generator().manual_seed(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_project_bonds_reaches_lengths_across_the_box():
    box = torch.eye(3, dtype=torch.float64) * 2.0
    # a three-atom chain broken over the x boundary
    x = torch.tensor([[1.95, 1.0, 1.0], [0.07, 1.0, 1.0], [0.12, 1.1, 1.0]], dtype=torch.float64)
    bonds = torch.tensor([[0, 1], [1, 2]])
    lengths = torch.tensor([0.15, 0.11], dtype=torch.float64)
    y = project_bonds(x, box, bonds, lengths, torch.ones(3, dtype=torch.float64), tol=1e-8, iterations=2000)
    d01 = (y[1] - y[0]) - box[0] * torch.round((y[1] - y[0])[0] / 2.0)
    assert float(d01.norm()) == pytest.approx(0.15, abs=1e-6)
    assert float((y[2] - y[1]).norm()) == pytest.approx(0.11, abs=1e-6)


def test_analytic_restraint_and_penalty_forces_equal_autograd(triatomics):
    """The run's analytic restraint, chirality and hydrogen-penalty forces are minus the autograd gradient
    of ``restraint_energy`` (v_min held constant, as in the penalty's definition)."""
    flat, pos, box, beads, centre = triatomics
    rng = np.random.default_rng(2)
    groups = np.array([rng.choice(3 * N_MOL, 5, replace=False) for _ in range(40)])
    signs = rng.choice([-1, 1], len(groups))
    # penalties switched on for most groups: a large v_min fraction, a low cos threshold
    dyn = RestrainedLangevin(flat, centre, 300.0, dtype=torch.float64, chiral=(groups, signs), chiral_fraction=3.0,
                             k_chiral=1e4, hydrogens=groups, hydrogen_max_cos=-0.9)
    x = torch.tensor(pos) + torch.tensor(rng.normal(scale=0.05, size=pos.shape))
    b, ref = torch.tensor(box, dtype=torch.float64), torch.tensor(beads) + 0.03
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(dyn.restraint_energy(xg, b, ref), xg)
    f = torch.zeros_like(x)
    dyn._penalty_forces(x, ref, dyn._images(x, b, ref), f)
    assert float(grad.abs().max()) > 1.0
    assert torch.allclose(f, -grad, rtol=1e-9, atol=1e-8)


def test_pair_forces_equal_the_force_field_gradient(triatomics):
    flat, pos, box, beads, centre = triatomics
    dyn = RestrainedLangevin(flat, centre, 300.0, cutoff=0.9, dtype=torch.float64)
    x = torch.tensor(pos)
    b = torch.tensor(box, dtype=torch.float64)
    dyn._fit_cutoff(box)
    pairs = dyn._prune(dyn._outer_pairs(x, b), x)
    _, _, g_lj, g_c = dyn.ff.pair_terms(x, b, pairs[0], pairs[1])
    assert torch.allclose(dyn._pair_forces(x, pairs), -(g_lj + g_c), rtol=1e-10, atol=1e-10)


def test_a_list_pruned_from_the_outer_list_holds_every_pair_a_search_finds(triatomics):
    """Exactness of the two lists: after displacements whose two largest add up to just under the
    difference of the skins, the Verlet list pruned from the outer list of the old positions equals a fresh
    search of the new ones, pair for pair and shift for shift."""
    flat, pos, box, beads, centre = triatomics
    dyn = RestrainedLangevin(flat, centre, 300.0, cutoff=0.9, skin=0.1, outer_skin=0.3, dtype=torch.float64)
    dyn._fit_cutoff(box)
    b = torch.tensor(box, dtype=torch.float64)
    x0 = torch.tensor(pos)
    outer = dyn._outer_pairs(x0, b)
    rng = np.random.default_rng(5)
    step = torch.tensor(rng.normal(size=pos.shape))
    moved = torch.linalg.vector_norm(step, dim=-1)
    x = x0 + step * (0.99 * (dyn.outer - dyn.skin) / float(torch.topk(moved, 2).values.sum()))
    pruned = dyn._prune(outer, x)
    direct = neighbor_pairs(x, b, dyn.cutoff + dyn.skin, shifts=True, keep=dyn.ff.not_excluded)
    n = len(pos)

    def table(p):
        keys = p[0] * n + p[1]
        order = torch.argsort(keys)
        return keys[order], p[2][order]

    (k1, s1), (k2, s2) = table(pruned), table(direct)
    assert len(k2) > 1000 and torch.equal(k1, k2)
    assert torch.allclose(s1, s2)
    # the outer list is longer: pruning did drop pairs
    assert len(outer[0]) > 1.2 * len(k1)


def test_float32_run_in_a_box_just_thicker_than_twice_the_verlet_radius(triatomics):
    """The outer list is clipped to half the smallest box height; in float32 that height may round down
    (2.1 nm does), and the search must not then refuse the box it was sized for."""
    flat, pos, box, beads, centre = triatomics
    scale = 2.1 / box[0, 0]
    dyn = RestrainedLangevin(flat, centre, 300.0, steps=3, cutoff=0.7)
    x = dyn.run(pos * scale, box * scale, beads * scale, torch.Generator().manual_seed(4))
    assert dyn.outer < dyn.outer_skin and np.isfinite(x).all()


def test_run_takes_tensors_and_returns_numpy(triatomics):
    flat, pos, box, beads, centre = triatomics
    dyn = RestrainedLangevin(flat, centre, 300.0, steps=5)
    a = dyn.run(pos, box, beads, torch.Generator().manual_seed(3))
    b = dyn.run(torch.tensor(pos), torch.tensor(box), torch.tensor(beads), torch.Generator().manual_seed(3))
    assert isinstance(b, np.ndarray) and b.dtype == np.float64 and np.array_equal(a, b)


@pytest.mark.gpu
def test_thermalisation_on_cuda(triatomics):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    flat, pos, box, beads, centre = triatomics
    bonds = np.array([[3 * m, 3 * m + k] for m in range(N_MOL) for k in (1, 2)])
    lengths = np.full(len(bonds), 0.1)
    dyn = RestrainedLangevin(flat, centre, 400.0, steps=100, bonds=bonds, lengths=lengths, device="cuda")
    assert dyn.ff.c6.device.type == "cuda"
    rng = torch.Generator(device="cuda").manual_seed(1)
    x = dyn.run(torch.tensor(pos, device="cuda"), box, beads, rng)
    assert isinstance(x, np.ndarray)
    r = np.linalg.norm(x[bonds[:, 1]] - x[bonds[:, 0]], axis=1)
    assert np.abs(r - 0.1).max() < 2e-4
    off = np.linalg.norm(centre @ x - beads, axis=1)
    assert off.max() < 5 * np.sqrt(KB * 400.0 / 5000.0)
