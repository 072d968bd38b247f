"""Local environments of beads as Gaussian density grids (deepBackmap's conditional input).

Tensor shapes (S = samples, i.e. atoms to place; M = environment slots; G = grid points per axis):
  positions (N, 3) nm | box (3, 3) nm, rows = box vectors | frames (S, 3, 3), rows = local x, y, z axes.
Local coordinates: origin at the bead centre, z towards the bead's align partner, a random rotation about
z on top. Everything is vectorised over samples; nothing loops over atoms or beads in Python.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .ff.geometry import minimum_image_one_box as minimum_image  # noqa: F401 (used by model code)


@dataclass(frozen=True)
class GridSpec:
    """Cubic grid: ``resolution``^3 voxels spanning ``length`` nm centred on the bead; Gaussian width
    ``sigma`` nm; environment atoms kept inside the cube of half-edge ``cutoff`` nm (paper: 8, 1.2, 0.1,
    0.7)."""
    resolution: int = 8
    length: float = 1.2
    sigma: float = 0.1
    cutoff: float = 0.7

    @property
    def spacing(self) -> float:
        return self.length / self.resolution

    def axis(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """Voxel-centre coordinates along one axis, nm."""
        n = self.resolution
        return (torch.arange(n, dtype=dtype, device=device) - (n - 1) / 2.0) * self.spacing


def rotation_about_z(angles: torch.Tensor) -> torch.Tensor:
    """(S,) angles -> (S, 3, 3) rotation matrices about z."""
    c, s = torch.cos(angles), torch.sin(angles)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1),
                        torch.stack([z, z, o], -1)], -2)


def local_frames(axis_vectors: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal frames (S, 3, 3) with rows x, y, z; z along ``axis_vectors`` (S, 3).

    x is made from the global axis least aligned with z, so the frame is a smooth, deterministic function
    of the axis; ``angles`` (S,) add a rotation about z (augmentation / orientation ensemble).
    """
    z = axis_vectors / axis_vectors.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    ref = torch.zeros_like(z)
    ref.scatter_(-1, z.abs().argmin(dim=-1, keepdim=True), 1.0)
    x = ref - (ref * z).sum(-1, keepdim=True) * z
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.cross(z, x, dim=-1)
    frames = torch.stack([x, y, z], dim=-2)
    if angles is not None:
        # rotating the environment by R about z == using frame rows rotated by R^T
        frames = rotation_about_z(angles).transpose(-1, -2) @ frames
    return frames


def gaussian_profiles(local: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Separable Gaussian factors: local (..., 3) -> (..., 3, G); density = gx * gy * gz."""
    ax = grid.axis(local.dtype, local.device)
    diff = local.unsqueeze(-1) - ax
    return torch.exp(-diff * diff / (2.0 * grid.sigma ** 2))


def voxelize(local: torch.Tensor, weights: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Sum of Gaussians on the grid.

    local (S, M, 3) nm, weights (S, M, C) (0 for absent atoms) -> (S, C, G, G, G).
    Computed as a batched matrix product of separable factors: (C*G_x) x M times M x (G_y*G_z).
    """
    S, M, C = weights.shape
    G = grid.resolution
    prof = gaussian_profiles(local, grid)            # (S, M, 3, G)
    gx, gy, gz = prof[:, :, 0], prof[:, :, 1], prof[:, :, 2]
    a = (weights.unsqueeze(-1) * gx.unsqueeze(-2)).reshape(S, M, C * G)     # (S, M, C*G)
    b = (gy.unsqueeze(-1) * gz.unsqueeze(-2)).reshape(S, M, G * G)          # (S, M, G*G)
    return torch.bmm(a.transpose(1, 2), b).reshape(S, C, G, G, G)


def density_of(local: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Density of single points: local (S, 3) -> (S, 1, G, G, G) (the 'real' density of an atom)."""
    prof = gaussian_profiles(local, grid)            # (S, 3, G)
    d = prof[:, 0, :, None, None] * prof[:, 1, None, :, None] * prof[:, 2, None, None, :]
    return d.unsqueeze(1)


def collapse(density: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Density -> point, the density-weighted mean voxel position (paper eq. 7): (S, 1, G, G, G) -> (S, 3).

    Differentiable; a Gaussian placed at r well inside the grid collapses back to r.
    """
    ax = grid.axis(density.dtype, density.device)
    d = density[:, 0]
    total = d.sum(dim=(1, 2, 3)).clamp_min(1e-12)
    x = (d.sum(dim=(2, 3)) * ax).sum(-1) / total
    y = (d.sum(dim=(1, 3)) * ax).sum(-1) / total
    z = (d.sum(dim=(1, 2)) * ax).sum(-1) / total
    return torch.stack([x, y, z], dim=-1)
