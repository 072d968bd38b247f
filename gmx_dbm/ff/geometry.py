"""Torch geometry for GROMACS boxes: minimum image, distances, angles, signed dihedrals.

Boxes are (B, 3, 3) with the box vectors a, b, c as rows (GROMACS triclinic form: a along x, b in the
xy plane). Positions are (B, ..., 3) in nm; angles come out in radians.
"""
from __future__ import annotations

import torch

from ..geometry import box_heights


def _box_like(box: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Box (B,3,3) reshaped to broadcast against vectors d (B, ..., 3)."""
    extra = d.dim() - 2
    return box.reshape(box.shape[0], *([1] * extra), 3, 3)


def minimum_image(d: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Shortest periodic image of difference vectors d (B, ..., 3), GROMACS style: remove multiples of
    c, then b, then a (exact for rectangular boxes and for triclinic ones within GROMACS' shape limits
    when |d| < half the shortest box height)."""
    b = _box_like(box, d)
    for k in (2, 1, 0):
        shift = torch.round(d[..., k] / b[..., k, k])
        d = d - shift.unsqueeze(-1) * b[..., k, :]
    return d


def minimum_image_one_box(d: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Minimum-image vectors d (..., 3) for one box (3, 3) (rows a, b, c): ``minimum_image``'s reduction,
    exact for vectors up to half the smallest box height (the hot loops: bonds, pair lists, grids)."""
    return minimum_image(d.unsqueeze(0), box.unsqueeze(0)).squeeze(0)


def minimum_image_fractional(d: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Minimum-image vectors d (..., 3) for one lower-triangular box (3, 3), by rounding the fractional
    coordinates: exact for every vector whose shortest image is below half the smallest box height, in
    any box shape (that image has |s_k| < 1/2 along every box vector), as the pair search
    (``neighbors``); longer vectors come back at an image no shorter than half that height."""
    inv = torch.linalg.inv(box.to(torch.float64)).to(d.dtype)
    b = box.to(d.dtype)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    n2 = torch.round(z * inv[2, 2])
    n1 = torch.round(y * inv[1, 1] + z * inv[2, 1])
    n0 = torch.round(x * inv[0, 0] + y * inv[1, 0] + z * inv[2, 0])
    return torch.stack([x - n0 * b[0, 0] - n1 * b[1, 0] - n2 * b[2, 0],
                        y - n1 * b[1, 1] - n2 * b[2, 1],
                        z - n2 * b[2, 2]], dim=-1)


def minimum_image_exact(d: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Exact shortest periodic image of vectors d (..., 3) for one box (3, 3), at any length: the
    reduction, then the 27 neighbouring images for every vector still longer than half the smallest box
    height (where the reduction alone may pick a longer image in a triclinic box)."""
    d = minimum_image_one_box(d, box)
    half = 0.5 * float(box_heights(box.detach().cpu().double().numpy()).min())
    far = (d * d).sum(-1) > half * half
    if bool(far.any()):
        grid = torch.tensor([-1.0, 0.0, 1.0], dtype=d.dtype, device=d.device)
        shifts = torch.cartesian_prod(grid, grid, grid) @ box.to(d.dtype)        # (27, 3)
        cand = d[far].unsqueeze(-2) + shifts                                      # (m, 27, 3)
        best = (cand * cand).sum(-1).argmin(-1)
        d = d.clone()
        d[far] = cand[torch.arange(len(best), device=d.device), best]
    return d


def pbc_vector(x: torch.Tensor, i: torch.Tensor, j: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
    """x_j - x_i for index tensors i, j (m,) of positions x (B, N, 3), minimum image if a box is given."""
    d = x[:, j] - x[:, i]
    return d if box is None else minimum_image(d, box)


def norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=-1)


def angle(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Angle between vectors (radians, 0..pi), via atan2 for accuracy near 0 and pi."""
    cross = torch.cross(v1, v2, dim=-1)
    return torch.atan2(norm(cross), (v1 * v2).sum(-1))


def bond_angle(r_ji: torch.Tensor, r_jk: torch.Tensor) -> torch.Tensor:
    """Angle i-j-k from the vectors x_i - x_j and x_k - x_j."""
    return angle(r_ji, r_jk)


def dihedral(r_ij: torch.Tensor, r_kj: torch.Tensor, r_kl: torch.Tensor) -> torch.Tensor:
    """Signed dihedral i-j-k-l in radians (-pi, pi], GROMACS/IUPAC convention (trans = pi), from
    r_ij = x_i - x_j, r_kj = x_k - x_j, r_kl = x_k - x_l as in GROMACS' dih_angle. Written as
    atan2(|r_kj| (m . r_kl), m . n) with m = r_ij x r_kj, n = r_kj x r_kl, which equals GROMACS'
    sign(r_ij . n) * angle(m, n) but stays differentiable at 0 and pi."""
    m = torch.cross(r_ij, r_kj, dim=-1)
    n = torch.cross(r_kj, r_kl, dim=-1)
    y = norm(r_kj) * (m * r_kl).sum(-1)
    x = (m * n).sum(-1)
    return torch.atan2(y, x)


def dihedral_from_positions(xi, xj, xk, xl, box=None) -> torch.Tensor:
    """Signed dihedral from four position tensors (B, m, 3)."""
    r_ij, r_kj, r_kl = xi - xj, xk - xj, xk - xl
    if box is not None:
        r_ij, r_kj, r_kl = (minimum_image(v, box) for v in (r_ij, r_kj, r_kl))
    return dihedral(r_ij, r_kj, r_kl)
