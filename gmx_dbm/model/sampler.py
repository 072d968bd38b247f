"""Autoregressive generation with Gibbs sweeps, batched over all beads of all molecules.

Used by the backmapping engine (inference) and by training (the recurrent pass that feeds generated
atoms into the environment of the next ones), so both see environments built the same way.
"""
from __future__ import annotations

import torch

from ..voxel import GridSpec, collapse, minimum_image
from .features import FrameState, featurize, refine_candidates
from .prior import prior_energy
from .recipe import Recipe


KB = 0.00831446261815324  # kJ/mol/K


def place(generator, recipe: Recipe, grid: GridSpec, state: FrameState, atoms: torch.Tensor,
          initial, rng: torch.Generator, orientations: int = 1, chunk: int = 4096,
          temperature: float = 0.0):
    """Generate positions for ``atoms`` (S,) given ``state``; returns bead-centred positions (S, 3).

    With ``orientations`` > 1 each atom gets that many candidates (random rotation about the bead axis
    and fresh noise). ``temperature`` 0 keeps the lowest-energy candidate (the paper's choice; it narrows
    distributions); T > 0 draws one with Boltzmann weights exp(-E / k T), E = the atom's bonded + LJ
    energy with the atoms present. All random numbers are drawn up front from ``rng``, so chunking does
    not change the result.
    """
    S = atoms.shape[0]
    K = max(1, int(orientations))
    atoms_rep = atoms.repeat(K)
    if not isinstance(initial, bool):
        initial = initial.repeat(K)
    angles = torch.rand(S * K, generator=rng) * (2 * torch.pi)
    noise = torch.randn(S * K, generator.noise_dim, generator=rng)
    rel_out = torch.empty(S * K, 3)
    energy = torch.zeros(S * K)
    for s in range(0, S * K, chunk):
        sl = slice(s, min(s + chunk, S * K))
        ini = initial if isinstance(initial, bool) else initial[sl]
        batch = featurize(recipe, grid, state, atoms_rep[sl], ini, angles[sl])
        dens = generator(batch.grid, batch.atom_type, noise[sl])
        rel = batch.to_rel(collapse(dens, grid))
        rel_out[sl] = rel
        if K > 1:
            e = prior_energy(batch, rel)
            energy[sl] = e["bond"] + e["angle"] + e["dihedral"] + e["lj"]
    if K == 1:
        return rel_out
    energy = energy.view(K, S)
    if temperature > 0:
        logits = -(energy - energy.min(0).values) / (KB * temperature)
        u = torch.rand(K, S, generator=rng).clamp_min(1e-12)
        best = (logits - torch.log(-torch.log(u))).argmax(0)    # Gumbel-max: a draw from softmax(logits)
    else:
        best = energy.argmin(0)
    return rel_out.view(K, S, 3)[best, torch.arange(S)]


@torch.no_grad()
def generate_frame(generator, recipe: Recipe, grid: GridSpec, state: FrameState, rng: torch.Generator,
                   gibbs: int = 4, orientations: int = 1, chunk: int = 4096, progress=None,
                   temperature: float = 0.0):
    """Fill ``state`` with generated positions: one initial pass then ``gibbs`` sweeps.

    At each step k every bead places its k-th atom at once; in the initial pass the environment holds
    the atoms of earlier steps, in Gibbs sweeps every other atom. Returns the positions (N, 3) nm,
    unwrapped around their beads.
    """
    seq = torch.from_numpy(recipe.bead_seq)
    beads_of = torch.from_numpy(recipe.atom_bead)
    for sweep in range(1 + gibbs):
        initial = sweep == 0
        if sweep >= 1:
            refine_candidates(state, grid)
        for k in range(recipe.n_steps):
            atoms = seq[:, k]
            atoms = atoms[atoms >= 0]
            rel = place(generator, recipe, grid, state, atoms, initial, rng, orientations, chunk, temperature)
            state.positions[atoms] = state.centres[beads_of[atoms]] + rel
            state.placed[atoms] = True
            if progress is not None:
                progress(sweep, k)
    return state.positions


def constrain_bonds(positions: torch.Tensor, box: torch.Tensor, bonds: torch.Tensor, lengths: torch.Tensor,
                    masses: torch.Tensor, iterations: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """Move bonded atoms onto the given bond lengths (mass-weighted SHAKE-like projection, Jacobi
    iterations, all bonds at once). Used when the training data had constrained bonds, as MD with
    constraints does. positions (N, 3), bonds (m, 2), lengths (m,) nm, masses (N,)."""
    x = positions.clone()
    i, j = bonds[:, 0], bonds[:, 1]
    inv_m = 1.0 / masses
    wi = (inv_m[i] / (inv_m[i] + inv_m[j]))[:, None]
    wj = (inv_m[j] / (inv_m[i] + inv_m[j]))[:, None]
    deg = torch.zeros(x.shape[0]).index_add_(0, i, torch.ones(len(i))).index_add_(0, j, torch.ones(len(j)))
    relax = (1.0 / deg.clamp_min(1))[:, None]
    for _ in range(iterations):
        d = minimum_image(x[j] - x[i], box)
        r = d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        err = (r - lengths[:, None]) / r
        if float(err.abs().max()) < tol:
            break
        corr = d * err
        dx = torch.zeros_like(x).index_add_(0, i, wi * corr).index_add_(0, j, -wj * corr)
        x = x + dx * relax * 1.5
    return x
