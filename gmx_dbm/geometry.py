"""Periodic-box geometry in numpy (no torch): GROMACS boxes, minimum image, wrapping, whole molecules.

Boxes are (3, 3) float arrays whose rows are the box vectors a, b, c in nm, lower triangular as GROMACS
requires (a = (ax, 0, 0), b = (bx, by, 0), c = (cx, cy, cz)). A .gro box line lists
``v1(x) v2(y) v3(z) v1(y) v1(z) v2(x) v2(z) v3(x) v3(y)``.
"""
from __future__ import annotations

import itertools
from collections import deque

import numpy as np

# .gro box line order -> (row, column) in the box matrix
_GRO_ORDER = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1))
_SHIFTS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)  # (27, 3)


def box_from_gro_values(values) -> np.ndarray:
    """3 (rectangular) or 9 (triclinic) numbers of a .gro box line -> (3, 3) box."""
    values = [float(v) for v in values]
    if len(values) not in (3, 9):
        raise ValueError(f"a box needs 3 or 9 numbers, got {len(values)}")
    box = np.zeros((3, 3))
    for (r, c), v in zip(_GRO_ORDER, values):
        box[r, c] = v
    return box


def box_from_gro_line(line: str) -> np.ndarray:
    return box_from_gro_values(line.split())


def box_to_gro_values(box) -> list:
    """(3, 3) box -> 3 numbers if rectangular, else the 9 of a triclinic .gro box line."""
    box = np.asarray(box, dtype=np.float64)
    values = [box[r, c] for r, c in _GRO_ORDER]
    return values[:3] if not any(values[3:]) else values


def box_problem(box) -> str | None:
    """Why ``box`` is unusable for periodic geometry, or None when it is fine."""
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (3, 3):
        return f"box must be 3x3, got shape {box.shape}"
    if not np.all(np.isfinite(box)):
        return "box contains NaN or infinite numbers"
    if not np.any(box):
        return "box is zero (no periodic box); gmx_dbm needs the periodic box"
    if box[0, 1] or box[0, 2] or box[1, 2]:
        return "box is not lower triangular (GROMACS needs a along x and b in the xy plane)"
    if min(box[0, 0], box[1, 1], box[2, 2]) <= 0 or abs(np.linalg.det(box)) < 1e-9:
        return f"box is singular or has a non-positive diagonal ({box[0, 0]:g}, {box[1, 1]:g}, {box[2, 2]:g})"
    return None


def box_lengths_angles(box) -> tuple:
    """(a, b, c) lengths and (alpha, beta, gamma) angles in degrees, as PDB's CRYST1 wants."""
    box = np.asarray(box, dtype=np.float64)
    lengths = np.linalg.norm(box, axis=1)

    def angle(u, v, nu, nv):
        if nu == 0 or nv == 0:
            return 90.0
        return float(np.degrees(np.arccos(np.clip(np.dot(u, v) / (nu * nv), -1.0, 1.0))))
    a, b, c = box
    return tuple(lengths), (angle(b, c, lengths[1], lengths[2]), angle(a, c, lengths[0], lengths[2]),
                            angle(a, b, lengths[0], lengths[1]))


def box_from_lengths_angles(lengths, angles) -> np.ndarray:
    """Lengths and angles (degrees) -> lower-triangular box, the GROMACS convention."""
    la, lb, lc = lengths
    alpha, beta, gamma = np.radians(angles)
    box = np.zeros((3, 3))
    box[0, 0] = la
    box[1, 0] = lb * np.cos(gamma)
    box[1, 1] = lb * np.sin(gamma)
    box[2, 0] = lc * np.cos(beta)
    box[2, 1] = lc * (np.cos(alpha) - np.cos(beta) * np.cos(gamma)) / np.sin(gamma)
    box[2, 2] = np.sqrt(max(lc ** 2 - box[2, 0] ** 2 - box[2, 1] ** 2, 0.0))
    box[np.abs(box) < 1e-10] = 0.0
    return box


def minimum_image(d, box) -> np.ndarray:
    """Shortest periodic image of difference vectors ``d`` (..., 3) in a triclinic ``box``.

    First reduces along c, b, a (GROMACS' order for lower-triangular boxes), then checks the 26
    neighbouring images, so that the result is exact also for strongly skewed boxes."""
    box = np.asarray(box, dtype=np.float64)
    d = np.array(d, dtype=np.float64, copy=True)
    shape = d.shape
    d = d.reshape(-1, 3)
    for k in (2, 1, 0):
        d -= np.outer(np.round(d[:, k] / box[k, k]), box[k])
    shifts = _SHIFTS @ box  # (27, 3)
    out = np.empty_like(d)
    chunk = 65536
    for s in range(0, len(d), chunk):
        cand = d[s:s + chunk, None, :] + shifts[None, :, :]
        best = np.argmin(np.einsum("nkx,nkx->nk", cand, cand), axis=1)
        out[s:s + chunk] = cand[np.arange(len(cand)), best]
    return out.reshape(shape)


def wrap(positions, box) -> np.ndarray:
    """Put every position into the box as GROMACS' ``put_atoms_in_box`` (trjconv -pbc atom) does for
    lower-triangular boxes: shifting by c, then b, then a gives 0 <= x_k < box[k, k] for each k, i.e. the
    rectangular brick of the triclinic cell."""
    box = np.asarray(box, dtype=np.float64)
    pos = np.array(positions, dtype=np.float64, copy=True)
    flat = pos.reshape(-1, 3)
    for k in (2, 1, 0):
        flat -= np.outer(np.floor(flat[:, k] / box[k, k]), box[k])
        # -1e-17 + L rounds to exactly L
        flat[flat[:, k] >= box[k, k]] -= box[k]
    return pos


class WholePlan:
    """Breadth-first placement order over a bond graph, computed once per topology.

    ``apply(positions, box)`` makes every connected component whole: its first atom stays where it is,
    every other atom is put at the minimum image relative to the bonded atom it was reached from.
    Needed because sPS chains are longer than half the box, so images relative to one atom break them."""

    def __init__(self, n_atoms: int, bonds):
        bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        if len(bonds) and (bonds.min() < 0 or bonds.max() >= n_atoms):
            raise ValueError(f"bond index out of range for {n_atoms} atoms")
        adj = [[] for _ in range(n_atoms)]
        for i, j in bonds:
            adj[i].append(j)
            adj[j].append(i)
        parent = np.full(n_atoms, -1, dtype=np.int64)
        depth = np.full(n_atoms, -1, dtype=np.int64)
        for root in range(n_atoms):
            if depth[root] >= 0:
                continue
            depth[root] = 0
            queue = deque([root])
            while queue:
                i = queue.popleft()
                for j in adj[i]:
                    if depth[j] < 0:
                        depth[j] = depth[i] + 1
                        parent[j] = i
                        queue.append(j)
        self.n_atoms = n_atoms
        order = np.argsort(depth, kind="stable")
        levels = depth[order]
        # one vectorised step per BFS level: all children of a level depend only on earlier levels
        self.levels = [order[levels == k] for k in range(1, int(levels.max(initial=0)) + 1)]
        self.parent = parent

    def apply(self, positions, box) -> np.ndarray:
        pos = np.array(positions, dtype=np.float64, copy=True)
        if pos.shape != (self.n_atoms, 3):
            raise ValueError(f"expected positions of shape ({self.n_atoms}, 3), got {pos.shape}")
        for idx in self.levels:
            par = self.parent[idx]
            pos[idx] = pos[par] + minimum_image(pos[idx] - pos[par], box)
        return pos


def make_whole(positions, box, bonds) -> np.ndarray:
    """Make molecules whole along ``bonds`` ((m, 2) global atom indices); see ``WholePlan``."""
    return WholePlan(len(positions), bonds).apply(positions, box)


# --------------------------------------------------------------------------- periodic pair search
def box_heights(box) -> np.ndarray:
    """Distances between opposite faces of the cell (nm), one per box vector."""
    box = np.asarray(box, dtype=np.float64)
    vol = abs(np.linalg.det(box))
    return np.array([vol / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])) for k in range(3)])
