"""Structure-quality metrics with the definitions of the deepBackmap comparison (numpy, no torch).

JSD uses the natural log on histograms pooled over all frames and all interactions of a kind: bonds
0.001 nm bins over 0.08-0.20 nm, angles 1 degree over 60-180, dihedrals 2 degrees over -180..180.
Positions (F, N, 3) nm; boxes (F, 3, 3) rows = box vectors.
"""
from __future__ import annotations

import numpy as np

from .geometry import minimum_image
from .topology import IMPROPER_FUNCS, PROPER_FUNCS

BINS = {
    "bond": np.linspace(0.08, 0.20, 121),
    "angle": np.linspace(60.0, 180.0, 121),
    "proper": np.linspace(-180.0, 180.0, 181),
    "improper": np.linspace(-180.0, 180.0, 181),
}


def _vectors(pos, box, i, j):
    # pos (F, N, 3); box (F, 3, 3) -> (F, m, 3)
    return np.stack([minimum_image(p[j] - p[i], b) for p, b in zip(pos, box)])


def bond_lengths(pos, box, idx):
    return np.linalg.norm(_vectors(pos, box, idx[:, 0], idx[:, 1]), axis=-1)


def angles_deg(pos, box, idx):
    a = _vectors(pos, box, idx[:, 1], idx[:, 0])
    b = _vectors(pos, box, idx[:, 1], idx[:, 2])
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def dihedrals_deg(pos, box, idx):
    """Signed dihedral angles i-j-k-l (IUPAC/GROMACS convention), degrees."""
    b1 = _vectors(pos, box, idx[:, 0], idx[:, 1])
    b2 = _vectors(pos, box, idx[:, 1], idx[:, 2])
    b3 = _vectors(pos, box, idx[:, 2], idx[:, 3])
    n1 = np.cross(b1, b2)
    n2 = np.cross(b2, b3)
    m1 = np.cross(n1, b2 / np.linalg.norm(b2, axis=-1, keepdims=True))
    x = (n1 * n2).sum(-1)
    y = (m1 * n2).sum(-1)
    return -np.degrees(np.arctan2(y, x))


def interaction_sets(flat) -> dict:
    """Index arrays per kind: bond, angle, proper (dihedral funcs 1, 3, 9), improper (2, 4)."""
    def cat(kind, funcs=None):
        parts = [idx for f, (idx, _) in flat.bonded[kind].items() if funcs is None or f in funcs]
        width = {"bonds": 2, "angles": 3, "dihedrals": 4}[kind]
        return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.int64)
    return {"bond": cat("bonds"), "angle": cat("angles"), "proper": cat("dihedrals", PROPER_FUNCS),
            "improper": cat("dihedrals", IMPROPER_FUNCS)}


def values(kind: str, pos, box, idx):
    if kind == "bond":
        return bond_lengths(pos, box, idx)
    if kind == "angle":
        return angles_deg(pos, box, idx)
    return dihedrals_deg(pos, box, idx)


def histogram(kind: str, vals) -> np.ndarray:
    h, _ = np.histogram(np.asarray(vals).ravel(), bins=BINS[kind])
    return h.astype(np.float64)


def jsd(p, q) -> float:
    """Jensen-Shannon divergence (natural log) of two histograms (normalised here)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a, b):
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / b[nz])).sum())
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def bonded_jsd(flat, ref_pos, cand_pos, box, cand_box=None) -> dict:
    """JSD per interaction kind between reference and candidate frames (same topology)."""
    ref_pos = np.asarray(ref_pos, dtype=np.float64)
    cand_pos = np.asarray(cand_pos, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    cand_box = box if cand_box is None else np.asarray(cand_box, dtype=np.float64)
    out = {}
    for kind, idx in interaction_sets(flat).items():
        if len(idx) == 0:
            continue
        out[f"{kind}_jsd"] = jsd(histogram(kind, values(kind, ref_pos, box, idx)),
                                 histogram(kind, values(kind, cand_pos, cand_box, idx)))
    return out


# =========================================================================== evaluate's additions
# Per-type breakdown, streaming accumulators, periodic pair search, RDFs, LJ per molecule, clashes.
# Everything takes one frame at a time (pos (N, 3), box (3, 3)) so that trajectories stream.

RDF_RMAX = 0.8      # nm
RDF_DR = 0.01       # nm
RDF_EXCL_BONDS = 3  # pairs within this many bonds are not part of the RDF
CLASH_DISTANCE = 0.1  # nm
CLASH_BONDS = 2  # pairs within this many bonds (bonds, angles) cannot clash

_REVERSIBLE = {"bond": True, "angle": True, "proper": True, "improper": False}


def type_key(kind: str, types) -> str:
    """Canonical label of an interaction by its atom types: a bond/angle/proper dihedral and its reverse
    are the same interaction ('C-C_AR' == 'C_AR-C'); impropers keep their order (the central atom
    matters)."""
    types = [str(t) for t in types]
    if _REVERSIBLE[kind] and types[::-1] < types:
        types = types[::-1]
    return "-".join(types)


def type_groups(kind: str, idx, types) -> tuple:
    """(labels list, group (m,) int) grouping the interactions ``idx`` (m, k) by their type tuple."""
    types = np.asarray(types)
    labels, group = [], np.zeros(len(idx), dtype=np.int64)
    seen = {}
    for n, row in enumerate(types[np.asarray(idx, dtype=np.int64)] if len(idx) else []):
        key = type_key(kind, row)
        if key not in seen:
            seen[key] = len(labels)
            labels.append(key)
        group[n] = seen[key]
    return labels, group


class BondedHistograms:
    """Pooled histograms (the deepBackmap comparison's bins) of bond lengths, angles, proper and improper dihedrals over
    frames added one at a time, also split by atom-type tuple. ``counts[kind]`` (groups, bins)."""

    def __init__(self, flat):
        self.sets = {k: v for k, v in interaction_sets(flat).items() if len(v)}
        self.labels, self.groups, self.counts = {}, {}, {}
        for kind, idx in self.sets.items():
            self.labels[kind], self.groups[kind] = type_groups(kind, idx, flat.types)
            self.counts[kind] = np.zeros((len(self.labels[kind]), len(BINS[kind]) - 1))
        self.n_frames = 0

    def add(self, pos, box) -> dict:
        """Add one frame; returns its values per kind (degrees / nm)."""
        pos = np.asarray(pos, dtype=np.float64)[None]
        box = np.asarray(box, dtype=np.float64)[None]
        out = {}
        for kind, idx in self.sets.items():
            v = values(kind, pos, box, idx)[0]
            out[kind] = v
            g = self.groups[kind]
            for k in range(len(self.labels[kind])):
                self.counts[kind][k] += histogram(kind, v[g == k])
        self.n_frames += 1
        return out

    def total(self, kind: str) -> np.ndarray:
        return self.counts[kind].sum(axis=0)

    def merged(self, other: "BondedHistograms") -> "BondedHistograms":
        out = object.__new__(BondedHistograms)
        out.sets, out.labels, out.groups = self.sets, self.labels, self.groups
        out.counts = {k: self.counts[k] + other.counts[k] for k in self.counts}
        out.n_frames = self.n_frames + other.n_frames
        return out

    def jsd(self, ref: "BondedHistograms") -> dict:
        """{'bond_jsd': ..., ...} against ``ref`` (same topology)."""
        return {f"{kind}_jsd": jsd(ref.total(kind), self.total(kind)) for kind in self.counts}

    def jsd_per_type(self, ref: "BondedHistograms") -> dict:
        """{kind: {type label: JSD}}."""
        return {kind: {lab: jsd(ref.counts[kind][k], self.counts[kind][k])
                       for k, lab in enumerate(self.labels[kind])} for kind in self.counts}


def pair_keys(pairs, n_atoms: int) -> np.ndarray:
    """Sorted unique int64 keys i * n + j (i < j) of index pairs (m, 2), for ``in_keys``."""
    pairs = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    return np.unique(pairs[:, 0] * n_atoms + pairs[:, 1])


def in_keys(i, j, n_atoms: int, keys, where=None) -> np.ndarray:
    """Boolean mask: is the pair (i, j) (i < j) among ``keys``? ``where`` (bool mask): look up only
    those pairs (e.g. the intramolecular ones when the keys are bonded exclusions), the rest are False."""
    out = np.zeros(len(i), dtype=bool)
    if len(keys) == 0:
        return out
    if where is not None:
        sel = np.nonzero(where)[0]
        out[sel] = in_keys(np.asarray(i)[sel], np.asarray(j)[sel], n_atoms, keys)
        return out
    k = np.asarray(i, dtype=np.int64) * n_atoms + np.asarray(j, dtype=np.int64)
    loc = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
    return keys[loc] == k


def pairs_within_bonds(bonds, n_atoms: int, n_bonds: int = RDF_EXCL_BONDS) -> np.ndarray:
    """Keys (see ``pair_keys``) of all atom pairs at most ``n_bonds`` bonds apart."""
    import scipy.sparse as sp

    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    if len(bonds) == 0 or n_bonds < 1:
        return np.zeros(0, dtype=np.int64)
    a = sp.coo_matrix((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), shape=(n_atoms, n_atoms)).tocsr()
    a = ((a + a.T) > 0).astype(np.int64)
    reach = a.copy()
    power = a
    for _ in range(n_bonds - 1):
        power = ((power @ a) > 0).astype(np.int64)
        reach = ((reach + power) > 0).astype(np.int64)
    r = sp.triu(reach, k=1).tocoo()
    return np.unique(r.row.astype(np.int64) * n_atoms + r.col.astype(np.int64))


# --------------------------------------------------------------------------- RDFs
class RDFAccumulator:
    """Radial distribution functions per element pair of non-bonded pairs (pairs within
    ``RDF_EXCL_BONDS`` bonds excluded), r < rmax, bins dr, averaged over frames.

    g_AB(r) = n_AB(r) / (N_A * N_B / V * 4/3 pi ((r+dr)^3 - r^3)) with n_AB the number of ordered
    pairs (A centre, B neighbour) per frame: the deepBackmap convention (densities N/V, not (N-1)/V).
    'C-C' is the published 'RDF of non-bonded carbon pairs'."""

    def __init__(self, element_of_atom, excluded_keys, rmax: float = RDF_RMAX, dr: float = RDF_DR,
                 mol_index=None):
        """``mol_index`` (per atom, optional): the exclusions are looked up only for pairs inside a
        molecule (faster; right when all excluded pairs are intramolecular, as bonded ones are)."""
        self.mol = None if mol_index is None else np.asarray(mol_index)
        self.elem = np.asarray(element_of_atom)
        self.names = sorted(set(self.elem.tolist()), key=lambda e: (e != "C", e != "H", e))
        code = {e: k for k, e in enumerate(self.names)}
        self.code = np.array([code[e] for e in self.elem], dtype=np.int64)
        self.count = np.bincount(self.code, minlength=len(self.names)).astype(np.float64)
        self.excluded = np.asarray(excluded_keys, dtype=np.int64)
        self.n_atoms = len(self.elem)
        self.rmax, self.dr = float(rmax), float(dr)
        self.nbins = int(round(self.rmax / self.dr))
        self.edges = np.linspace(0.0, self.nbins * self.dr, self.nbins + 1)
        self.shell = 4.0 / 3.0 * np.pi * (self.edges[1:] ** 3 - self.edges[:-1] ** 3)
        ne = len(self.names)
        self.sum_g = np.zeros((ne, ne, self.nbins))
        self.n_frames = 0

    @property
    def r(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    def add(self, i, j, d, volume: float) -> None:
        """One frame's pairs (i < j, distance d) from ``periodic_pairs`` with cut-off >= rmax."""
        sel = (d < self.rmax) & (d > 0)
        i, j, d = i[sel], j[sel], d[sel]
        where = None if self.mol is None else self.mol[i] == self.mol[j]
        sel = ~in_keys(i, j, self.n_atoms, self.excluded, where)
        i, j, d = i[sel], j[sel], d[sel]
        ne = len(self.names)
        a, b = self.code[i], self.code[j]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        k = np.minimum((d / self.dr).astype(np.int64), self.nbins - 1)
        n = np.bincount((lo * ne + hi) * self.nbins + k, minlength=ne * ne * self.nbins)
        n = n.reshape(ne, ne, self.nbins).astype(np.float64)
        for x in range(ne):
            for y in range(x, ne):
                # ordered (x centre, y neighbour) pairs: both directions for x == y
                ordered = 2.0 * n[x, y] if x == y else n[x, y]
                g = ordered / (self.count[x] * self.count[y] / volume * self.shell)
                self.sum_g[x, y] += g
                if x != y:
                    self.sum_g[y, x] += g
        self.n_frames += 1

    def merged(self, other: "RDFAccumulator") -> "RDFAccumulator":
        out = object.__new__(RDFAccumulator)
        out.__dict__.update(self.__dict__)
        out.sum_g = self.sum_g + other.sum_g
        out.n_frames = self.n_frames + other.n_frames
        return out

    def g(self) -> dict:
        """{'C-C': g(r), 'C-H': ..., ...} (element pairs, the order of ``names``)."""
        out = {}
        for x, ex in enumerate(self.names):
            for y in range(x, len(self.names)):
                out[f"{ex}-{self.names[y]}"] = self.sum_g[x, y] / max(self.n_frames, 1)
        return out


def rdf_deviation(g_ref, g, dr: float = RDF_DR) -> float:
    """Integral |g_ref - g| dr (nm)."""
    return float(np.sum(np.abs(np.asarray(g_ref) - np.asarray(g))) * dr)


# --------------------------------------------------------------------------- LJ per molecule, clashes
def per_molecule(i, j, e, mol_index, n_mols: int) -> np.ndarray:
    """Energy of each molecule with everything around it: pairs inside the molecule once, pairs with
    other molecules in full (so a molecule's value is its interaction energy; the sum over molecules
    counts intermolecular pairs twice). The deepBackmap 'LJ energy per molecule'."""
    mi, mj = mol_index[i], mol_index[j]
    out = np.bincount(mi, weights=e, minlength=n_mols)
    return out + np.bincount(mj, weights=np.where(mi != mj, e, 0.0), minlength=n_mols)


def count_clashes(i, j, d, n_atoms: int, near_keys, distance: float = CLASH_DISTANCE) -> int:
    """Number of pairs closer than ``distance`` (nm) that are not among ``near_keys`` (``pair_keys``
    of the pairs within two bonds: ``pairs_within_bonds(bonds, n, CLASH_BONDS)``). Force-field
    exclusions do not count: a collapsed aromatic ring has its overlapping atoms three bonds apart,
    excluded from the non-bonded terms, and is a clash all the same."""
    close = d < distance
    if not close.any():
        return 0
    return int((~in_keys(i[close], j[close], n_atoms, near_keys)).sum())
