"""Generator and critic: residual 3D CNNs on the environment grid (paper section II.C).

Shapes: condition (S, C, G, G, G); atom type (S,) index; noise (S, noise_dim); density (S, 1, G, G, G).
The generator's density is a softmax over voxels scaled to the mass of a grid Gaussian, so its collapse
(eq. 7) is a convex combination of voxel centres and stays inside the grid.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _groups(width: int) -> int:
    for g in (8, 4, 2):
        if width % g == 0:
            return g
    return 1


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state) with a path for channels-last 5-D input, where
    torch's CPU kernel is ~3x slower than on contiguous input (measured: 360 x 16 x 8^3 on one thread,
    25.6 ms against 7.8 ms here): per-channel sums over the voxels, which are contiguous rows there."""

    def forward(self, x):
        # CPU float32/64 only: elsewhere torch's kernel (and autocast's float32 statistics) stay in charge
        if x.dim() != 5 or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) \
                or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last_3d):
            return super().forward(x)
        S, C, D, H, W = x.shape
        G, k, V = self.num_groups, C // self.num_groups, D * H * W
        p = x.permute(0, 2, 3, 4, 1).reshape(S, V, C)                 # a view: (sample, voxel, channel)
        mean = p.sum(1).view(S, G, k).sum(-1).div_(V * k).repeat_interleave(k, 1)        # (S, C)
        centred = p - mean[:, None, :]
        var = centred.square().sum(1).view(S, G, k).sum(-1).div_(V * k)   # two passes, as torch's kernel
        scale = torch.rsqrt(var + self.eps).repeat_interleave(k, 1)
        if self.affine:
            scale = scale * self.weight
            y = torch.addcmul(self.bias[None, None, :], centred, scale[:, None, :])
        else:
            y = centred.mul_(scale[:, None, :])
        return y.view(S, D, H, W, C).permute(0, 4, 1, 2, 3)


class ResBlock(nn.Module):
    def __init__(self, width: int, norm: bool, sn: bool):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        self.conv1 = wrap(nn.Conv3d(width, width, 3, padding=1))
        self.conv2 = wrap(nn.Conv3d(width, width, 3, padding=1))
        self.norm1 = GroupNorm(_groups(width), width) if norm else nn.Identity()
        self.norm2 = GroupNorm(_groups(width), width) if norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(x + h)


class Generator(nn.Module):
    """G(z, u, c): noise + conditional grid + atom type -> density on the grid.

    Noise is embedded at 2^3 and brought to the grid by real upsampling (trilinear + conv), then joined
    with the processed condition; ``n_blocks`` residual blocks of ``width`` channels follow.
    """

    def __init__(self, in_channels: int, n_atom_types: int, resolution: int = 8, width: int = 32,
                 n_blocks: int = 3, noise_dim: int = 32, sigma_voxels: float = 2.0 / 3.0):
        super().__init__()
        self.hparams = dict(in_channels=in_channels, n_atom_types=n_atom_types, resolution=resolution,
                            width=width, n_blocks=n_blocks, noise_dim=noise_dim, sigma_voxels=sigma_voxels)
        self.noise_dim = noise_dim
        self.n_atom_types = n_atom_types
        self.cond_in = nn.Sequential(nn.Conv3d(in_channels + n_atom_types, width, 3, padding=1), nn.LeakyReLU(0.2))
        self.noise_in = nn.Linear(noise_dim + n_atom_types, width * 8)
        ups = []
        size = 2
        while size < resolution:
            ups += [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                    nn.Conv3d(width, width, 3, padding=1), nn.LeakyReLU(0.2)]
            size *= 2
        if size != resolution:
            raise ValueError(f"grid resolution must be a power of two >= 2, got {resolution}")
        self.noise_up = nn.Sequential(*ups)
        self.width = width
        self.merge = nn.Sequential(nn.Conv3d(2 * width, width, 1), nn.LeakyReLU(0.2))
        self.blocks = nn.Sequential(*[ResBlock(width, norm=True, sn=False) for _ in range(n_blocks)])
        self.out = nn.Conv3d(width, 1, 1)
        # total density of a Gaussian of width sigma sampled on a grid with unit voxels
        self.mass = float((2 * math.pi) ** 1.5 * sigma_voxels ** 3)

    def forward(self, cond, atom_type, noise):
        onehot = nn.functional.one_hot(atom_type, self.n_atom_types).to(cond.dtype)
        G = cond.shape[-1]
        u = torch.cat([cond, onehot[:, :, None, None, None].expand(-1, -1, G, G, G)], 1)
        h = self.cond_in(u)
        z = self.noise_in(torch.cat([noise, onehot], 1)).view(-1, self.width, 2, 2, 2)
        z = self.noise_up(z)
        h = self.blocks(self.merge(torch.cat([h, z], 1)))
        logits = self.out(h).flatten(1)
        return (torch.softmax(logits, dim=1) * self.mass).view(-1, 1, G, G, G)


class Critic(nn.Module):
    """C(u, gamma): condition + density (+ atom type) -> score. Spectral norm on every weight."""

    def __init__(self, in_channels: int, n_atom_types: int, resolution: int = 8, width: int = 32,
                 n_blocks: int = 2):
        super().__init__()
        self.hparams = dict(in_channels=in_channels, n_atom_types=n_atom_types, resolution=resolution,
                            width=width, n_blocks=n_blocks)
        self.n_atom_types = n_atom_types
        sn = spectral_norm
        layers = [sn(nn.Conv3d(in_channels + n_atom_types + 1, width, 3, padding=1)), nn.LeakyReLU(0.2)]
        layers += [ResBlock(width, norm=False, sn=True) for _ in range(n_blocks)]
        size = resolution
        w = width
        while size > 2:
            layers += [sn(nn.Conv3d(w, 2 * w, 3, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            w *= 2
            size //= 2
        self.body = nn.Sequential(*layers)
        self.head = sn(nn.Linear(w * size ** 3, 1))

    def forward(self, cond, atom_type, density):
        onehot = nn.functional.one_hot(atom_type, self.n_atom_types).to(cond.dtype)
        G = cond.shape[-1]
        x = torch.cat([cond, density, onehot[:, :, None, None, None].expand(-1, -1, G, G, G)], 1)
        return self.head(self.body(x).flatten(1)).squeeze(-1)


NETWORK_SIZES = {
    # compact: trains and infers on 2 CPU cores; large: paper-sized, for a GPU
    "compact": dict(g_width=16, g_blocks=2, c_width=16, c_blocks=1, noise_dim=32),
    "large": dict(g_width=64, g_blocks=4, c_width=64, c_blocks=3, noise_dim=64),
}
