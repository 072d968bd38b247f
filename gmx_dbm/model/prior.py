"""Energy of placing atoms at candidate positions, given the atoms already there (the paper's prior).

Terms are GROMACS' functional forms (``gmx_dbm.ff.functional``) evaluated on the bonded interactions the
atom takes part in whose other members are present, plus LJ with the present non-excluded environment.
Candidate and partner positions are bead-centred and unrotated (nm); energies in kJ/mol, shape (S,).
"""
from __future__ import annotations

import torch

from ..ff import functional as F
from ..ff import geometry as geo
from .features import Batch


LJ_CAP = 50.0  # kJ/mol per pair


def _members(b: dict, cand: torch.Tensor) -> torch.Tensor:
    """Member positions (S, m, w, 3) with the atom's own slot replaced by its candidate position."""
    pos = b["pos"]
    is_self = torch.arange(pos.shape[2], device=pos.device)[None, None, :] == b["slot"][..., None]
    return torch.where(is_self[..., None], cand[:, None, None, :].to(pos.dtype), pos)


def dihedral_energy(phi, func, params):
    """Any GROMACS dihedral func (1, 2, 3, 4, 9) on signed angles phi (radians)."""
    periodic = F.periodic_dihedral(phi, params[..., 0], params[..., 1], params[..., 2])
    improper = F.harmonic_improper(phi, params[..., 0], params[..., 1])
    rb = F.ryckaert_bellemans(phi, params)
    return torch.where(func == 2, improper, torch.where(func == 3, rb, periodic))


def prior_energy(batch: Batch, cand: torch.Tensor, lj_cutoff: float = 1.0) -> dict:
    """Energies (S,) per term: bond, angle, dihedral, lj, for candidate positions ``cand`` (S, 3)."""
    out = {}
    b = batch.bonded["bonds"]
    x = _members(b, cand)
    r = geo.norm(x[:, :, 1] - x[:, :, 0])
    p = b["params"]
    e = torch.where(b["func"] == 2, F.g96_bond(r, p[..., 0], p[..., 1]), F.harmonic_bond(r, p[..., 0], p[..., 1]))
    out["bond"] = (e * b["active"]).sum(-1)

    a = batch.bonded["angles"]
    x = _members(a, cand)
    theta = geo.bond_angle(x[:, :, 0] - x[:, :, 1], x[:, :, 2] - x[:, :, 1])
    p = a["params"]
    e = torch.where(a["func"] == 2, F.g96_angle(torch.cos(theta), p[..., 0], p[..., 1]),
                    F.harmonic_angle(theta, p[..., 0], p[..., 1]))
    out["angle"] = (e * a["active"]).sum(-1)

    t = batch.bonded["dihedrals"]
    x = _members(t, cand)
    phi = geo.dihedral(x[:, :, 0] - x[:, :, 1], x[:, :, 2] - x[:, :, 1], x[:, :, 2] - x[:, :, 3])
    out["dihedral"] = (dihedral_energy(phi, t["func"], t["params"]) * t["active"]).sum(-1)

    d = batch.env_rel - cand[:, None, :]
    r2 = (d * d).sum(-1).clamp_min(0.05 ** 2)
    e = F.lennard_jones(r2, batch.env_c6, batch.env_c12, cutoff=lj_cutoff, shift=False)
    # overlapping candidates early in training would give 1e7 kJ/mol and swamp every other signal:
    # repulsion above LJ_CAP grows only logarithmically (smooth, monotonic, unchanged below the cap)
    e = torch.where(e > LJ_CAP, LJ_CAP * (1.0 + torch.log(e.clamp_min(LJ_CAP) / LJ_CAP)), e)
    out["lj"] = e.sum(-1)
    return out
