"""Torch cell-list pair search (``gmx_dbm.neighbors``), the one pair search of the package: exactly the
brute-force minimum-image pairs in rectangular, triclinic and rhombic-dodecahedron boxes, thin boxes,
atoms outside the box, real frames; long cut-offs (each pair once, at its shortest image); refusal of
boxes thinner than twice the cut-off otherwise; CUDA equals CPU."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gmx_dbm.errors import InputError
from gmx_dbm.geometry import box_heights
from gmx_dbm.io import read_frame
from gmx_dbm.neighbors import neighbor_pairs, periodic_pairs

DATA = Path(__file__).resolve().parent / "data"


def brute_force(x, box, cutoff):
    """{(i, j): distance} over i < j: the shortest of the 27 images around the fractional reduction of
    every difference (O(N^2), exact for vectors below half the smallest box height)."""
    x, box = np.asarray(x, dtype=np.float64), np.asarray(box, dtype=np.float64)
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64) @ box
    s = x @ np.linalg.inv(box)
    out = {}
    for a in range(len(x) - 1):
        ds = s[a + 1:] - s[a]
        ds -= np.floor(ds)
        d = (ds @ box)[:, None, :] + shifts[None]
        r = np.sqrt((d * d).sum(-1)).min(1)
        for k in np.nonzero(r < cutoff)[0]:
            out[(a, a + 1 + int(k))] = float(r[k])
    return out


def check_exact(x, box, cutoff, **kw):
    xt, bt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(box, dtype=torch.float64)
    i, j, shift, d = neighbor_pairs(xt, bt, cutoff, shifts=True, distances=True, **kw)
    want = brute_force(x, box, cutoff)
    got = list(zip(i.tolist(), j.tolist()))
    assert len(got) == len(set(got)), "duplicate pairs"
    assert set(got) == set(want)
    assert bool((i < j).all())
    if len(got):
        assert np.allclose(d.numpy(), [want[p] for p in got], rtol=0, atol=1e-12)
        vec = xt[j] - xt[i] + shift
        assert np.allclose(vec.norm(dim=-1).numpy(), d.numpy(), rtol=0, atol=1e-9)
    return len(got)


BOXES = {
    "rectangular": np.diag([3.1, 2.6, 2.9]),
    "triclinic": np.array([[3.3, 0, 0], [0.9, 3.1, 0], [-1.2, 1.4, 3.2]]),
    # GROMACS' rhombic dodecahedron (xy-square) and its hexagonal form, image distance d
    "dodecahedron_square": 3.0 * np.array([[1, 0, 0], [0, 1, 0], [0.5, 0.5, math.sqrt(2) / 2]]),
    "dodecahedron_hexagon": 3.0 * np.array([[1, 0, 0], [0.5, math.sqrt(3) / 2, 0],
                                            [0.5, math.sqrt(3) / 6, math.sqrt(6) / 3]]),
    "long_thin": np.array([[9.0, 0, 0], [0.4, 2.3, 0], [0.3, -0.8, 2.2]]),
}


@pytest.mark.parametrize("name", sorted(BOXES))
@pytest.mark.parametrize("fraction", [0.25, 0.42, 0.4999])
def test_equals_brute_force(name, fraction):
    """Cut-offs from a quarter to just under half the smallest box height (the latter with fewer than
    five cells along the short axes: every cell visited, pairs kept once)."""
    box = BOXES[name]
    cutoff = fraction * float(box_heights(box).min())
    rng = np.random.default_rng(int(fraction * 1e4) + len(name))
    x = rng.uniform(0, 1, size=(400, 3)) @ box
    assert check_exact(x, box, cutoff) > 0


@pytest.mark.parametrize("name", ["triclinic", "dodecahedron_hexagon"])
def test_atoms_outside_the_box(name):
    box = BOXES[name]
    rng = np.random.default_rng(5)
    x = rng.uniform(-2.5, 3.5, size=(300, 3)) @ box - 4.0     # negative and several boxes away
    check_exact(x, box, 0.45 * float(box_heights(box).min()))


def test_dense_clusters_and_small_chunks():
    """Many atoms in few cells, and blocks of a few hundred candidates: the same pairs."""
    box = BOXES["triclinic"]
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(c, 0.15, size=(60, 3)) for c in rng.uniform(0, 3, size=(5, 3))])
    full = check_exact(x, box, 1.0)
    i, j = neighbor_pairs(torch.tensor(x), torch.tensor(box), 1.0, chunk=300)
    assert len(i) == full and set(zip(i.tolist(), j.tolist())) == set(brute_force(x, box, 1.0))


def test_dilute_system_with_few_wide_cells():
    """A handful of atoms in a long box: the cell grid is capped (two cells along the short axes)."""
    box = BOXES["long_thin"]
    rng = np.random.default_rng(4)
    for seed in range(5):
        x = rng.uniform(-1, 2, size=(6, 3)) @ box
        check_exact(x, box, 1.05)


def test_empty_and_single_atom():
    box = torch.eye(3, dtype=torch.float64) * 3
    for n in (0, 1):
        i, j, shift, d = neighbor_pairs(torch.zeros(n, 3, dtype=torch.float64), box, 1.0, shifts=True,
                                        distances=True)
        assert i.dtype == torch.int64 and len(i) == len(j) == len(d) == 0 and shift.shape == (0, 3)
    i, j = neighbor_pairs(np.array([[0.1, 0.1, 0.1], [2.95, 0.1, 0.1]]), np.eye(3) * 3, 1.0)
    assert (i.tolist(), j.tolist()) == ([0], [1])     # across the boundary


def test_float32_positions():
    box = BOXES["triclinic"]
    x = np.random.default_rng(2).uniform(0, 1, size=(300, 3)) @ box
    i, j = neighbor_pairs(torch.tensor(x, dtype=torch.float32), torch.tensor(box, dtype=torch.float32), 1.2)
    want = brute_force(x, box, 1.2)
    got = set(zip(i.tolist(), j.tolist()))
    # only pairs within float32 rounding of the cut-off may differ
    assert all(abs(want.get(p, 1.2) - 1.2) < 1e-5 for p in got ^ set(want))


def test_refuses_a_box_thinner_than_twice_the_cutoff():
    thin = np.array([[1.9, 0, 0], [0, 1.9, 0], [0, 0, 3.0]])
    with pytest.raises(InputError, match="longer than half the smallest box height"):
        neighbor_pairs(np.zeros((4, 3)), thin, 1.0)
    with pytest.raises(InputError, match="lower triangular"):
        neighbor_pairs(np.zeros((4, 3)), np.array([[3.0, 0.5, 0], [0, 3, 0], [0, 0, 3]]), 1.0)
    with pytest.raises(InputError, match="positive"):
        neighbor_pairs(np.zeros((4, 3)), np.eye(3) * 3, 0.0)


@pytest.mark.parametrize("folder", ["sps3", "sps_mix"])
def test_real_frame_equals_brute_force(folder):
    """A frame written by GROMACS (atoms outside the box, the triclinic sPS box shape), through the numpy
    entry point the analysis uses."""
    frame = read_frame(DATA / folder / "aa.gro")
    cutoff = min(1.0, 0.49 * float(box_heights(frame.box).min()))
    a, b, dist = periodic_pairs(frame.positions, frame.box, cutoff)
    assert a.dtype == np.int64 and dist.dtype == np.float64
    want = brute_force(frame.positions, frame.box, cutoff)
    got = dict(zip(zip(a.tolist(), b.tolist()), dist.tolist()))
    assert len(got) == len(a) > 1000 and got.keys() == want.keys()
    assert max(abs(got[p] - want[p]) for p in got) < 1e-12


def brute_force_long(x, box, cutoff, reach=3):
    """{(i, j): shortest image distance} over i < j, from every image within ``reach`` box vectors."""
    x, box = np.asarray(x, dtype=np.float64), np.asarray(box, dtype=np.float64)
    r = range(-reach, reach + 1)
    shifts = np.array(list(itertools.product(r, r, r)), dtype=np.float64) @ box
    out = {}
    for a in range(len(x) - 1):
        d = (x[a + 1:] - x[a])[:, None, :] + shifts[None]
        dist = np.sqrt((d * d).sum(-1)).min(1)
        for k in np.nonzero(dist < cutoff)[0]:
            out[(a, a + 1 + int(k))] = float(dist[k])
    return out


@pytest.mark.parametrize("name", ["rectangular", "triclinic", "dodecahedron_hexagon", "long_thin"])
@pytest.mark.parametrize("fraction", [0.6, 1.0, 1.6])
def test_long_cutoff_lists_each_pair_once_at_its_shortest_image(name, fraction):
    """Cut-offs beyond half the smallest box height (the featuriser's bead environments in small boxes):
    every pair once, at the exact minimum-image distance, also where the rounded fractional image of a
    triclinic box is not the shortest."""
    box = BOXES[name]
    cutoff = fraction * float(box_heights(box).min())
    x = np.random.default_rng(int(fraction * 10) + len(name)).uniform(-1, 2, size=(120, 3)) @ box
    i, j, d = periodic_pairs(x, box, cutoff, long_cutoff=True)
    want = brute_force_long(x, box, cutoff)
    got = dict(zip(zip(i.tolist(), j.tolist()), d.tolist()))
    assert len(got) == len(i) > 0 and got.keys() == want.keys()
    assert max(abs(got[p] - want[p]) for p in got) < 1e-12


def test_long_cutoff_refused_without_the_flag_and_with_shifts():
    box = BOXES["triclinic"]
    cutoff = 0.8 * float(box_heights(box).min())
    with pytest.raises(InputError, match="longer than half the smallest box height"):
        periodic_pairs(np.zeros((3, 3)), box, cutoff)
    with pytest.raises(ValueError, match="shift vectors"):
        neighbor_pairs(np.zeros((3, 3)), box, cutoff, shifts=True, long_cutoff=True)


@pytest.mark.gpu
def test_cuda_equals_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    frame = read_frame(DATA / "sps_mix" / "aa.gro")
    rng = np.random.default_rng(0)
    for box, x, cutoff in [(frame.box, frame.positions, 0.49 * float(box_heights(frame.box).min())),
                           (BOXES["dodecahedron_hexagon"], rng.uniform(-1, 2, (2000, 3)) @ BOXES["dodecahedron_hexagon"], 1.2)]:
        for dtype in (torch.float64, torch.float32):
            xt, bt = torch.tensor(x, dtype=dtype), torch.tensor(box, dtype=dtype)
            cpu = neighbor_pairs(xt, bt, cutoff, shifts=True, distances=True)
            gpu = neighbor_pairs(xt.cuda(), bt.cuda(), cutoff, shifts=True, distances=True)
            assert all(t.device.type == "cuda" for t in gpu)
            n = xt.shape[0]
            kc, kg = cpu[0] * n + cpu[1], gpu[0].cpu() * n + gpu[1].cpu()
            oc, og = torch.argsort(kc), torch.argsort(kg)
            if dtype == torch.float64:
                assert torch.equal(kc[oc], kg[og])
                assert torch.allclose(cpu[2][oc], gpu[2].cpu()[og]) and torch.allclose(cpu[3][oc], gpu[3].cpu()[og])
            else:   # float32: pairs at the cut-off within rounding may differ
                assert abs(len(kc) - len(kg)) <= 2
