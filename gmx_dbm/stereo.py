"""Stereochemistry of tetrahedral centres: find them, read their handedness, learn it from all-atom
frames, and repair generated structures whose centres came out inverted (numpy only).

A centre is an atom with four bonded neighbours, three of them heavy and one a hydrogen (a CH with three
different-looking heavy substituents, as every backbone CH of polystyrene). Its handedness is the sign of
the volume (n1 - c) . ((n2 - c) x (n3 - c)) of its heavy neighbours taken in topology order. Equilibrium
MD never changes it; a generator that places atoms one bead at a time can, directly or by leaving the
hydrogen on its heavy neighbours' side, which short MD then resolves by pushing the carbon through
(measured on sPS with the shipped model: 11.6% of the backbone CH centres inverted without a repair, the
reference 0%; nearly all of the proper-dihedral error). ``place_hydrogens`` puts such hydrogens back;
``repair`` inverts a centre back by moving the centre atom and its hydrogen to their mirror images
through the plane of the three heavy neighbours (bonds kept); backmap first redraws the beads of
inverted centres with the generator and mirrors only what is left.

Which handedness is right is a property of the molecule, not of the CG frame: it comes from the model
card (learnt from the training data; only centres with one handedness in every molecule and frame) or
from an all-atom template of the user's system.
"""
from __future__ import annotations

import numpy as np

from .geometry import minimum_image


def find_centres(flat) -> np.ndarray:
    """(m, 5) int: centre, its three heavy neighbours (ascending), its hydrogen; global atom indices."""
    n = flat.n_atoms
    neigh = [[] for _ in range(n)]
    for idx, _ in flat.bonded["bonds"].values():
        for i, j in np.asarray(idx).tolist():
            neigh[i].append(j)
            neigh[j].append(i)
    heavy = flat.is_heavy
    out = []
    for c in range(n):
        nb = neigh[c]
        if len(nb) != 4 or not heavy[c]:
            continue
        hv = sorted(a for a in nb if heavy[a])
        hs = [a for a in nb if not heavy[a]]
        if len(hv) == 3 and len(hs) == 1:
            out.append((c, *hv, hs[0]))
    return np.asarray(out, dtype=np.int64).reshape(-1, 5)


def handedness(positions, box, centres: np.ndarray) -> np.ndarray:
    """(m,) +1 / -1 per centre (0 for a flat one)."""
    x = np.asarray(positions, dtype=np.float64)
    c = x[centres[:, 0]]
    v = [minimum_image(x[centres[:, k]] - c, box) for k in (1, 2, 3)]
    return np.sign(np.einsum("ij,ij->i", v[0], np.cross(v[1], v[2]))).astype(np.int64)


def learn(flat, frames, centres: np.ndarray | None = None) -> dict:
    """{moleculetype: {local centre atom index: sign}} from all-atom frames (iterable of (positions, box)):
    the centres whose handedness is the same in every molecule of that type and every frame."""
    centres = find_centres(flat) if centres is None else centres
    if len(centres) == 0:
        return {}
    mol_type = np.asarray(flat.mol_type)[np.asarray(flat.mol_index)[centres[:, 0]]]
    first = _first_atom_of_molecule(flat)
    local = centres[:, 0] - first[np.asarray(flat.mol_index)[centres[:, 0]]]
    seen: dict = {}
    for positions, box in frames:
        s = handedness(positions, box, centres)
        for t, a, v in zip(mol_type.tolist(), local.tolist(), s.tolist()):
            seen.setdefault(str(t), {}).setdefault(int(a), set()).add(int(v))
    return {t: {a: next(iter(v)) for a, v in sorted(d.items()) if len(v) == 1 and 0 not in v}
            for t, d in seen.items() if any(len(v) == 1 and 0 not in v for v in d.values())}


def _first_atom_of_molecule(flat) -> np.ndarray:
    mol = np.asarray(flat.mol_index)
    first = np.zeros(mol.max() + 1 if len(mol) else 0, dtype=np.int64)
    # atoms are in molecule order: the first index of each molecule
    change = np.r_[True, mol[1:] != mol[:-1]]
    first[mol[change]] = np.nonzero(change)[0]
    return first


def targets(flat, table: dict, centres: np.ndarray | None = None) -> tuple:
    """Global (centres (k, 5), signs (k,)) of the centres ``table`` (from ``learn``) fixes in this system."""
    centres = find_centres(flat) if centres is None else centres
    if len(centres) == 0 or not table:
        return centres[:0], np.zeros(0, dtype=np.int64)
    mol_type = np.asarray(flat.mol_type)[np.asarray(flat.mol_index)[centres[:, 0]]]
    local = centres[:, 0] - _first_atom_of_molecule(flat)[np.asarray(flat.mol_index)[centres[:, 0]]]
    keep, signs = [], []
    for k, (t, a) in enumerate(zip(mol_type.tolist(), local.tolist())):
        sign = table.get(str(t), {}).get(int(a), table.get(str(t), {}).get(str(a)))
        if sign is not None:
            keep.append(k)
            signs.append(int(sign))
    return centres[keep], np.asarray(signs, dtype=np.int64)


def repair(positions, box, centres: np.ndarray, signs: np.ndarray) -> tuple:
    """Invert the centres whose handedness differs from ``signs``: centre atom and hydrogen mirrored
    through the plane of the heavy neighbours. Returns (new positions, number inverted)."""
    x = np.array(positions, dtype=np.float64, copy=True)
    if len(centres) == 0:
        return x, 0
    wrong = handedness(x, box, centres) != signs
    cw = centres[wrong]
    if len(cw) == 0:
        return x, 0
    c = x[cw[:, 0]]
    p1 = c + minimum_image(x[cw[:, 1]] - c, box)
    p2 = c + minimum_image(x[cw[:, 2]] - c, box)
    p3 = c + minimum_image(x[cw[:, 3]] - c, box)
    normal = np.cross(p2 - p1, p3 - p1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-12)
    for col in (0, 4):
        a = c + minimum_image(x[cw[:, col]] - c, box)
        dist = np.einsum("ij,ij->i", a - p1, normal)
        x[cw[:, col]] = a - 2.0 * dist[:, None] * normal
    return x, int(wrong.sum())


def hydrogens_inside(positions, box, centres: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """(m,) bool: the centre's hydrogen points towards its heavy neighbours (the sum of the unit vectors
    to them) instead of away from them: no tetrahedral centre has that. ``tol``: the dot product of the
    hydrogen's unit vector with that sum must exceed it (rounded coordinates of a nearly flat centre)."""
    x = np.asarray(positions, dtype=np.float64)
    c = x[centres[:, 0]]
    units = [_unit(minimum_image(x[centres[:, k]] - c, box)) for k in (1, 2, 3, 4)]
    return np.einsum("ij,ij->i", units[0] + units[1] + units[2], units[3]) > tol


def place_hydrogens(positions, box, centres: np.ndarray) -> tuple:
    """Put the hydrogen of each centre that ``hydrogens_inside`` finds opposite its heavy neighbours (along -(u1 + u2 + u3), at its current bond length): measured on sPS, the shipped
    generator left ~5% of the backbone CH hydrogens on the heavy atoms' side; MD then pushes the carbon
    through the plane of its neighbours (an inverted centre) rather than the hydrogen back.
    Returns (new positions, number moved)."""
    x = np.array(positions, dtype=np.float64, copy=True)
    if len(centres) == 0:
        return x, 0
    which = hydrogens_inside(x, box, centres)
    cw = centres[which]
    if len(cw) == 0:
        return x, 0
    c = x[cw[:, 0]]
    heavy = sum(_unit(minimum_image(x[cw[:, k]] - c, box)) for k in (1, 2, 3))
    h = minimum_image(x[cw[:, 4]] - c, box)
    x[cw[:, 4]] = c - _unit(heavy) * np.linalg.norm(h, axis=1, keepdims=True)
    return x, int(which.sum())


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-12)


def merge(tables) -> dict:
    """One table from several (several data sets): a centre whose handedness disagrees is dropped."""
    out: dict = {}
    dropped: dict = {}
    for table in tables:
        for t, d in table.items():
            for a, v in d.items():
                a = int(a)
                if a in dropped.get(t, ()):
                    continue
                prev = out.setdefault(t, {}).get(a)
                if prev is not None and prev != v:
                    del out[t][a]
                    dropped.setdefault(t, set()).add(a)
                else:
                    out[t][a] = int(v)
    return {t: d for t, d in out.items() if d}
