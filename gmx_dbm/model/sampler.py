"""Autoregressive generation with Gibbs sweeps, batched over all beads of all molecules.

Used by the backmapping engine (inference) and by training (the recurrent pass that feeds generated
atoms into the environment of the next ones), so both see environments built the same way.
"""
from __future__ import annotations

import torch

from .. import units
from ..voxel import GridSpec, collapse, minimum_image
from .features import FrameState, featurize, refine_candidates
from .prior import prior_energy
from .recipe import Recipe


def _sample_from_density(dens: torch.Tensor, u: torch.Tensor, jitter: torch.Tensor, grid: GridSpec):
    """Points drawn from densities (S, 1, G, G, G) by inverse CDF over voxels (u (S, P) uniform) plus a
    uniform offset inside the voxel (jitter (S, P, 3) in [-0.5, 0.5)); local coordinates (S, P, 3)."""
    G = grid.resolution
    cdf = dens.flatten(1).cumsum(1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1:]).contiguous()).clamp_max(G ** 3 - 1)
    ix, iy, iz = idx // (G * G), (idx // G) % G, idx % G
    ax = grid.axis(dens.dtype, dens.device)
    return torch.stack([ax[ix], ax[iy], ax[iz]], -1) + jitter * grid.spacing


def place(generator, recipe: Recipe, grid: GridSpec, state: FrameState, atoms: torch.Tensor,
          initial, rng: torch.Generator, orientations: int = 1, chunk: int = 4096,
          temperature: float = 0.0, proposals: int = 1, local_step: float = 0.02, bond_weight: float = 1.0,
          lj_cutoff: float = 1.0):
    """Generate positions for ``atoms`` (S,) given ``state``; returns bead-centred positions (S, 3).

    Candidates per atom: ``orientations`` generator draws (random rotation about the bead axis and fresh
    noise), each collapsed to its mean (paper eq. 7) and, with ``proposals`` > 1, ``proposals`` - 1 more
    points drawn from the generated density; where the atom is already placed (Gibbs sweeps) its current
    position is a candidate too, and half of the drawn points are replaced by local moves: the current
    position plus Gaussian steps of ``local_step`` nm (a Metropolis-like refinement the broad densities of a
    small model cannot provide). With one candidate that is the result (the paper's sampler). Otherwise
    ``temperature`` 0 keeps the lowest-energy candidate (the paper's ensemble choice), T > 0 draws one with
    Boltzmann weights exp(-E / k T); E = the atom's bonded + LJ energy with the atoms present. All random
    numbers are drawn up front from ``rng``, so chunking does not change the result. ``bond_weight``
    scales bond energies in the choice (stiff when bonds will be constrained afterwards, so that the
    projection onto the bond lengths hardly moves atoms and does not spoil the angles). ``lj_cutoff``:
    of the LJ term in that energy (nm; the run parameters' rvdw).
    """
    S = atoms.shape[0]
    K = max(1, int(orientations))
    P = max(1, int(proposals))
    dev = state.positions.device
    atoms_rep = atoms.repeat(K)
    if not isinstance(initial, bool):
        initial = initial.repeat(K)
    angles = torch.rand(S * K, generator=rng, device=dev) * (2 * torch.pi)
    noise = torch.randn(S * K, generator.noise_dim, generator=rng, device=dev)
    u = torch.rand(S * K, P - 1, generator=rng, device=dev)
    jitter = torch.rand(S * K, P - 1, 3, generator=rng, device=dev) - 0.5
    kicks = torch.randn(S * K, P - 1, 3, generator=rng, device=dev) * local_step
    atom_bead = recipe.tables(dev).atom_bead
    n_local = (P - 1) // 2 if local_step > 0 else 0
    current = state.placed[atoms]
    with_current = bool(current.any()) and (K * P > 1)
    rel_out = torch.empty(S * K, P, 3, device=dev)
    energy = torch.zeros(S * K, P, device=dev)
    e_current = torch.full((S,), float("inf"), device=dev)
    for s in range(0, S * K, chunk):
        sl = slice(s, min(s + chunk, S * K))
        ini = initial if isinstance(initial, bool) else initial[sl]
        # choosing among candidates needs the atom's whole energy: hydrogens already placed count too
        batch = featurize(recipe, grid, state, atoms_rep[sl], ini, angles[sl], prior_hydrogens=K * P > 1)
        dens = generator(batch.grid, batch.atom_type, noise[sl])
        local = collapse(dens, grid)[:, None, :]
        if P > 1:
            local = torch.cat([local, _sample_from_density(dens, u[sl], jitter[sl], grid)], 1)
        rel = torch.einsum("sji,spj->spi", batch.frames, local)
        if n_local and with_current:
            rows = atoms_rep[sl]
            here = state.placed[rows]
            cur = minimum_image(state.positions[rows] - state.centres[batch.beads], state.box)
            moved = cur[:, None, :] + kicks[sl, :n_local]
            rel[:, P - n_local:] = torch.where(here[:, None, None], moved, rel[:, P - n_local:])
        rel_out[sl] = rel
        if K * P > 1:
            for p in range(P):
                e = prior_energy(batch, rel[:, p], lj_cutoff)
                energy[sl, p] = bond_weight * e["bond"] + e["angle"] + e["dihedral"] + e["lj"]
        if with_current and s < S:
            rows = torch.arange(sl.start, min(sl.stop, S), device=dev)
            cur = minimum_image(state.positions[atoms[rows]] - state.centres[batch.beads[:len(rows)]], state.box)
            sub = batch.head(len(rows))
            e = prior_energy(sub, cur, lj_cutoff)
            e_current[rows] = torch.where(current[rows], bond_weight * e["bond"] + e["angle"] + e["dihedral"] + e["lj"],
                                          torch.full_like(e["bond"], float("inf")))
    if K * P == 1:
        return rel_out[:, 0]
    cands = rel_out.view(K, S, P, 3).permute(1, 0, 2, 3).reshape(S, K * P, 3)
    energy = energy.view(K, S, P).permute(1, 0, 2).reshape(S, K * P)
    if with_current:
        cur_rel = minimum_image(state.positions[atoms] - state.centres[atom_bead[atoms]], state.box)
        cands = torch.cat([cands, cur_rel[:, None]], 1)
        energy = torch.cat([energy, e_current[:, None]], 1)
    if temperature > 0:
        logits = -(energy - energy.min(1, keepdim=True).values) / (units.KB * temperature)
        g = torch.rand(logits.shape, generator=rng, device=dev).clamp_min(1e-12)
        best = (logits - torch.log(-torch.log(g))).argmax(1)    # Gumbel-max: a draw from softmax(logits)
    else:
        best = energy.argmin(1)
    return cands[torch.arange(S, device=dev), best]


@torch.no_grad()
def generate_frame(generator, recipe: Recipe, grid: GridSpec, state: FrameState, rng: torch.Generator,
                   gibbs: int = 4, orientations: int = 1, chunk: int = 4096, progress=None,
                   temperature: float = 0.0, proposals: int = 1, local_step: float = 0.02,
                   proposal_sweeps: int = 1, bond_weight: float = 1.0, lj_cutoff: float = 1.0):
    """Fill ``state`` with generated positions: one initial pass then ``gibbs`` sweeps.

    ``proposals`` > 1 applies to the last ``proposal_sweeps`` sweeps only: energy-based choice is a
    refinement; from a rough start it would keep atoms where they suit wrongly placed neighbours
    (measured: angle JSD 0.27 instead of 0.11 with it in every sweep).

    At each step k every bead places its k-th atom at once; in the initial pass the environment holds
    the atoms of earlier steps, in Gibbs sweeps every other atom. Returns the positions (N, 3) nm,
    unwrapped around their beads.
    """
    for sweep in range(1 + gibbs):
        n_prop = proposals if sweep >= 1 and sweep > gibbs - proposal_sweeps else 1
        sweep_pass(generator, recipe, grid, state, rng, sweep == 0, orientations, chunk, temperature, n_prop,
                   local_step, bond_weight, lj_cutoff)
        if progress is not None:
            progress(sweep)
    return state.positions


def sweep_pass(generator, recipe: Recipe, grid: GridSpec, state: FrameState, rng: torch.Generator,
               initial: bool, orientations: int = 1, chunk: int = 4096, temperature: float = 0.0,
               proposals: int = 1, local_step: float = 0.02, bond_weight: float = 1.0,
               lj_cutoff: float = 1.0) -> None:
    """One pass over every bead's sequence: the initial pass (all beads at once; same-step atoms are absent
    from each other's environment) or a Gibbs sweep (one bead colour at a time, so bonded neighbours never
    move together)."""
    tab = recipe.tables(state.positions.device)
    seq, color = tab.bead_seq, tab.bead_color
    if not initial:
        refine_candidates(state, grid)
    groups = [torch.ones(recipe.n_beads, dtype=torch.bool, device=seq.device)] if initial else \
        [color == c for c in range(recipe.n_colors)]
    for k in range(recipe.n_steps):
        for group in groups:
            atoms = seq[group, k]
            atoms = atoms[atoms >= 0]
            if len(atoms) == 0:
                continue
            _place_into(generator, recipe, grid, state, atoms, initial, rng, orientations, chunk, temperature,
                        proposals, local_step, bond_weight, lj_cutoff)


def _place_into(generator, recipe: Recipe, grid: GridSpec, state: FrameState, atoms: torch.Tensor, initial,
                rng: torch.Generator, *args, **kwargs) -> None:
    """``place`` the atoms and write them into ``state`` (bead centre + local position, marked placed)."""
    rel = place(generator, recipe, grid, state, atoms, initial, rng, *args, **kwargs)
    state.positions[atoms] = state.centres[recipe.tables(atoms.device).atom_bead[atoms]] + rel
    state.placed[atoms] = True


@torch.no_grad()
def regenerate_beads(generator, recipe: Recipe, grid: GridSpec, state: FrameState, beads: torch.Tensor,
                     rng: torch.Generator, sweeps: int = 1, chunk: int = 4096) -> None:
    """Generate the atoms of ``beads`` afresh with every other atom present: their atoms are removed,
    placed again in generation order (each sees the other beads' atoms and its own bead's atoms placed so
    far), then refined by ``sweeps`` Gibbs sweeps over these beads only. New noise and orientation draws
    from ``rng``. Used to redraw a bead whose atoms came out with a wrong configuration (an inverted
    tetrahedral centre) instead of deforming it into the right one."""
    dev = state.positions.device
    beads = torch.unique(torch.as_tensor(beads, dtype=torch.int64, device=dev))
    if len(beads) == 0:
        return
    seq = recipe.tables(dev).bead_seq[beads]
    atoms = seq[seq >= 0]
    refine_candidates(state, grid)   # while every atom is placed: candidate lists keep the redrawn atoms
    state.placed[atoms] = False
    for _ in range(1 + sweeps):
        for k in range(recipe.n_steps):
            step_atoms = seq[:, k]
            step_atoms = step_atoms[step_atoms >= 0]
            if len(step_atoms) == 0:
                continue
            _place_into(generator, recipe, grid, state, step_atoms, False, rng, chunk=chunk)


def constrain_bonds(positions: torch.Tensor, box: torch.Tensor, bonds: torch.Tensor, lengths: torch.Tensor,
                    masses: torch.Tensor, iterations: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """Move bonded atoms onto the given bond lengths (mass-weighted SHAKE-like projection, Jacobi
    iterations, all bonds at once). Used when the training data had constrained bonds, as MD with
    constraints does. positions (N, 3), bonds (m, 2), lengths (m,) nm, masses (N,)."""
    from ..ff.dynamics import project_bonds
    return project_bonds(positions.clone(), box, bonds, lengths, 1.0 / masses, iterations, tol)
