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
