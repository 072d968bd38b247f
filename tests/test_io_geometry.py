"""Periodic geometry: minimum image in skewed triclinic boxes, GROMACS-style wrapping, whole molecules."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from gmx_dbm.geometry import (WholePlan, box_from_gro_line, box_from_lengths_angles, box_lengths_angles,
                              box_problem, box_to_gro_values, make_whole, minimum_image, wrap)

SKEWED = np.array([[4.0, 0.0, 0.0], [-1.9, 2.2, 0.0], [1.5, -1.0, 2.0]])


def brute_force_min_image(d, box, reach=5):
    best = None
    for s in itertools.product(range(-reach, reach + 1), repeat=3):
        cand = d + np.asarray(s) @ box
        n = np.linalg.norm(cand, axis=-1)
        if best is None:
            best, bn = cand.copy(), n
        else:
            better = n < bn
            best[better], bn[better] = cand[better], n[better]
    return best


@pytest.mark.parametrize("box", [np.diag([3.0, 2.0, 2.5]), SKEWED,
                                 np.array([[10.2, 0, 0], [-1.58, 2.35, 0], [0, 0, 2.82]])])
def test_minimum_image_is_shortest(box):
    rng = np.random.default_rng(1)
    d = rng.uniform(-5, 5, (2000, 3))
    got = minimum_image(d, box)
    ref = brute_force_min_image(d, box)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(ref, axis=1), atol=1e-9)
    # the result differs from the input by a lattice vector
    frac = (got - d) @ np.linalg.inv(box)
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)


def test_wrap_gromacs_brick():
    rng = np.random.default_rng(2)
    x = rng.uniform(-10, 10, (1000, 3))
    w = wrap(x, SKEWED)
    assert (w >= 0).all() and (w < np.diag(SKEWED)).all()
    frac = (w - x) @ np.linalg.inv(SKEWED)
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)


def test_make_whole_chain_longer_than_half_the_box():
    box = np.array([[2.0, 0, 0], [0.3, 2.0, 0], [0, 0, 2.0]])
    # a zig-zag chain of 30 atoms, 0.15 nm bonds, 4.5 nm long in a 2 nm box, plus a second molecule
    chain = np.cumsum(np.tile([[0.15, 0.02, 0.0], [0.15, -0.02, 0.01]], (15, 1)), axis=0)
    other = np.array([[1.0, 1.0, 1.0], [1.1, 1.0, 1.0]])
    pos = np.vstack([chain, other])
    bonds = [(i, i + 1) for i in range(29)] + [(30, 31)]
    broken = wrap(pos + 0.9, box)
    whole = make_whole(broken, box, bonds)
    np.testing.assert_allclose(np.diff(whole[:30], axis=0), np.diff(chain, axis=0), atol=1e-12)
    np.testing.assert_allclose(whole[0], broken[0])  # the first atom of each molecule stays put
    plan = WholePlan(32, bonds)
    np.testing.assert_allclose(plan.apply(broken, box), whole)
    with pytest.raises(ValueError):
        WholePlan(5, [(0, 7)])


def test_box_conversions():
    box = box_from_gro_line("1.0 2.0 3.0 0.0 0.0 0.4 0.0 0.5 0.6")
    np.testing.assert_allclose(box, [[1.0, 0, 0], [0.4, 2.0, 0], [0.5, 0.6, 3.0]])
    assert box_to_gro_values(box) == [1.0, 2.0, 3.0, 0.0, 0.0, 0.4, 0.0, 0.5, 0.6]
    assert box_to_gro_values(np.diag([1.0, 2.0, 3.0])) == [1.0, 2.0, 3.0]
    lengths, angles = box_lengths_angles(SKEWED)
    np.testing.assert_allclose(box_from_lengths_angles(lengths, angles), SKEWED, atol=1e-12)
    assert box_problem(SKEWED) is None
    assert "zero" in box_problem(np.zeros((3, 3)))
    assert "singular" in box_problem(np.diag([1.0, 0.0, 1.0]))
    assert "lower triangular" in box_problem(np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError):
        box_from_gro_line("1 2")
