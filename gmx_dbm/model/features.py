"""Conditional inputs for batches of atoms to place: environment grids and the energy-prior context.

A ``FrameState`` holds one frame's bead centres, current atom positions and which atoms are placed;
``featurize`` turns a batch of atoms into grids (all beads and molecules at once) plus what the energy
prior needs (partner positions relative to the bead centre). Positions are float32 nm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ff.geometry import minimum_image_exact
from ..geometry import box_heights
from ..neighbors import periodic_pairs
from ..voxel import GridSpec, density_of, local_frames, minimum_image, voxelize
from .recipe import N_RELATIONS, REL_ANGLE, REL_BOND, REL_DIHEDRAL, REL_EXCLUDED, Recipe

# Atoms sit within this distance of their bead centre (sPS: <= 0.33 nm); used only to find candidates.
ATOM_REACH = 0.45


@dataclass
class FrameState:
    positions: torch.Tensor      # (N, 3) current positions (reference or generated); junk where not placed
    placed: torch.Tensor         # (N,) bool
    centres: torch.Tensor        # (nb, 3) bead centres
    box: torch.Tensor            # (3, 3)
    axes: torch.Tensor           # (nb, 3) vector from bead centre to its align partner (minimum image)
    cand_atoms: torch.Tensor     # (nb, Mc) candidate environment atoms, -1 padded
    cand_beads: torch.Tensor     # (nb, Mb) candidate environment beads, -1 padded
    cand_all: torch.Tensor | None = None  # the bead-level candidate list refine_candidates starts from
    exact_images: bool = False   # box thinner than twice the environment reach: exact minimum images

    def image(self, d: torch.Tensor) -> torch.Tensor:
        """Minimum-image vectors d (..., 3) in this frame's box."""
        return minimum_image_exact(d, self.box) if self.exact_images else minimum_image(d, self.box)


def _neighbour_beads(centres: torch.Tensor, box: torch.Tensor, radii) -> list:
    """For each radius, (nb, Mb) indices of beads within it of each bead (itself included, ascending),
    -1 padded. One periodic cell-list search (``neighbors.periodic_pairs``, exact minimum image at any
    radius) serves all radii."""
    nb = centres.shape[0]
    # once per frame, on the host, in float64: the long cut-off mode serves radii beyond half the box height
    i, j, d = periodic_pairs(centres.detach().cpu().double().numpy(), box.detach().cpu().double().numpy(),
                             max(radii), long_cutoff=True)
    out = []
    for radius in radii:
        k = d <= radius
        rows = np.concatenate([i[k], j[k], np.arange(nb)])
        cols = np.concatenate([j[k], i[k], np.arange(nb)])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        counts = np.bincount(rows, minlength=nb)
        slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
        table = np.full((nb, int(counts.max())), -1, dtype=np.int64)
        table[rows, slot] = cols
        out.append(torch.from_numpy(table).to(centres.device))
    return out


def build_state(recipe: Recipe, grid: GridSpec, centres, box, positions=None, placed=None,
                device=None) -> FrameState:
    """State of one frame on ``device`` (default: the CPU, or the device of ``centres`` if a tensor).
    Without ``positions`` nothing is placed (inference start)."""
    if device is None:
        device = centres.device if torch.is_tensor(centres) else torch.device("cpu")
    centres = torch.as_tensor(centres, dtype=torch.float32, device=device)
    box = torch.as_tensor(box, dtype=torch.float32, device=device)
    N = recipe.n_atoms
    if positions is None:
        positions = torch.zeros(N, 3, device=device)
        placed = torch.zeros(N, dtype=torch.bool, device=device)
    else:
        positions = torch.as_tensor(positions, dtype=torch.float32, device=device).clone()
        placed = torch.ones(N, dtype=torch.bool, device=device) if placed is None else placed.to(device).clone()
    t = recipe.tables(device)
    align = t.bead_align
    axes = minimum_image(centres[align.clamp_min(0)] - centres, box)
    # a bead with no partner (one-bead molecule) keeps the lab z axis; rotations about it are sampled
    axes = torch.where((align >= 0)[:, None], axes, torch.tensor([0.0, 0.0, 1.0], device=device))
    # cube half-edge c holds points up to c*sqrt(3) from the centre; atoms sit within ATOM_REACH of theirs.
    # Vectors to environment atoms come from the plain minimum-image reduction, exact up to half the
    # smallest box height; an atom enters a grid only within ``reach`` of its centre, so the reduction is
    # exact for every atom that counts when reach <= half the height (sPS: 1.21 <= 1.38 nm). In thinner
    # boxes every vector gets the exact (27-image) minimum image
    reach = grid.cutoff * 3 ** 0.5
    exact = reach > 0.5 * float(box_heights(box.cpu().double().numpy()).min())
    cand_beads, cand_beads_env = _neighbour_beads(centres, box, (reach + ATOM_REACH, reach + 3 * grid.sigma))
    # atoms of candidate beads: bead -> atoms table, then gather
    seq = t.bead_seq                                                # (nb, K), -1 padded
    atoms = torch.where(cand_beads[:, :, None] >= 0, seq[cand_beads.clamp_min(0)], torch.full_like(seq[:1, None], -1))
    atoms = atoms.reshape(atoms.shape[0], -1)
    valid = atoms >= 0
    counts = valid.sum(1)
    order = torch.argsort(valid.to(torch.int8), dim=1, descending=True, stable=True)[:, :int(counts.max())]
    cand_atoms = torch.gather(atoms, 1, order)
    return FrameState(positions, placed, centres, box, axes, cand_atoms, cand_beads_env, exact_images=exact)


@dataclass
class Batch:
    """Inputs for placing S atoms. ``grid`` (S, C, G, G, G); ``frames`` (S, 3, 3) rows = local axes;
    ``atom_type`` (S,) channel index; prior context in bead-centred unrotated coordinates (nm)."""
    atoms: torch.Tensor
    beads: torch.Tensor
    grid: torch.Tensor
    frames: torch.Tensor
    atom_type: torch.Tensor
    env_rel: torch.Tensor        # (S, M, 3) environment atoms present
    env_c6: torch.Tensor         # (S, M) zero where excluded / absent
    env_c12: torch.Tensor
    bonded: dict                 # kind -> dict(pos (S, m, w, 3), slot (S, m), func (S, m), params, active)

    def head(self, n: int) -> "Batch":
        """The first n samples (views, no copies)."""
        return Batch(self.atoms[:n], self.beads[:n], self.grid[:n], self.frames[:n], self.atom_type[:n],
                     self.env_rel[:n], self.env_c6[:n], self.env_c12[:n],
                     {k: {f: v[:n] for f, v in d.items()} for k, d in self.bonded.items()})

    def to_local(self, rel: torch.Tensor) -> torch.Tensor:
        return torch.einsum("sij,sj->si", self.frames, rel)

    def to_rel(self, local: torch.Tensor) -> torch.Tensor:
        return torch.einsum("sji,sj->si", self.frames, local)

    def target_density(self, true_rel: torch.Tensor, grid: GridSpec) -> torch.Tensor:
        return density_of(self.to_local(true_rel), grid)


def _compact(mask: torch.Tensor, *tensors):
    """Keep, per row, only the slots where ``mask`` is true (front-packed, shortest common width).

    O(n) with a cumulative sum and a scatter (no sort); order within a row is preserved."""
    S, M = mask.shape
    counts = mask.sum(1)
    m = max(int(counts.max()) if counts.numel() else 0, 1)
    slot = torch.where(mask, mask.cumsum(1) - 1, torch.full_like(counts[:, None], m).expand(S, M))
    dev = mask.device
    src = torch.arange(M, device=dev).expand(S, M)
    order = torch.zeros(S, m + 1, dtype=torch.long, device=dev).scatter_(1, slot, src)[:, :m]
    keep = torch.arange(m, device=dev)[None, :] < counts[:, None]
    out = [torch.gather(t, 1, order.reshape(order.shape + (1,) * (t.dim() - 2)).expand(
        order.shape + t.shape[2:])) for t in tensors]
    return keep, out


def refine_candidates(state: FrameState, grid: GridSpec, margin: float = 0.15) -> None:
    """Shrink each bead's candidate atoms to those now within reach of its cube (all atoms placed, before
    each Gibbs sweep; always from the full bead-level list): atoms move less than ``margin`` nm in a sweep."""
    if state.cand_all is None:
        state.cand_all = state.cand_atoms
    c = state.cand_all
    ok = c >= 0
    cc = c.clamp_min(0)
    d = state.image(state.positions[cc] - state.centres[:, None, :])
    reach = grid.cutoff * 3 ** 0.5 + margin
    near = ok & state.placed[cc] & ((d * d).sum(-1) <= reach * reach)
    keep, (c,) = _compact(near, c)
    state.cand_atoms = torch.where(keep, c, torch.full_like(c, -1))


def featurize(recipe: Recipe, grid: GridSpec, state: FrameState, atoms: torch.Tensor,
              initial: torch.Tensor | bool, angles: torch.Tensor, prior_hydrogens: bool = False) -> Batch:
    """Build the conditional input for placing ``atoms`` (S,).

    ``prior_hydrogens``: bonded prior terms of heavy atoms include placed hydrogens of the same molecule
    (for choosing among candidates in Gibbs sweeps, where every atom is there); the grid never shows them.

    ``initial`` (S,) bool: the environment holds only atoms earlier in the generation order (step <
    the atom's step; initial pass), else every placed atom but this one (Gibbs sweeps). Hydrogens of
    the same molecule are absent from the environment of heavy atoms (paper II.E).
    """
    S = atoms.shape[0]
    dev = state.positions.device
    if isinstance(initial, bool):
        initial = torch.full((S,), initial, dtype=torch.bool, device=dev)
    tab = recipe.tables(dev)
    atom_bead, atom_step, atom_mol = tab.atom_bead, tab.atom_step, tab.atom_mol
    is_heavy, atom_chan = tab.is_heavy, tab.atom_channel
    beads = atom_bead[atoms]
    centre = state.centres[beads]                                          # (S, 3)
    frames = local_frames(state.axes[beads], angles)                      # (S, 3, 3)

    # ---- environment atoms
    cand = state.cand_atoms[beads]                                         # (S, Mc)
    ok = cand >= 0
    c = cand.clamp_min(0)
    present = ok & state.placed[c] & (c != atoms[:, None])
    present &= ~initial[:, None] | (atom_step[c] < atom_step[atoms][:, None])
    same_mol = atom_mol[c] == atom_mol[atoms][:, None]
    present &= ~(is_heavy[atoms][:, None] & ~is_heavy[c] & same_mol)
    rel = state.image(state.positions[c] - centre[:, None, :])
    local = torch.einsum("sij,smj->smi", frames, rel)
    in_cube = (local.abs() <= grid.cutoff).all(-1)
    keep, (c, rel, local) = _compact(present & in_cube, c, rel, local)

    rel_bits = recipe.relations(atoms[:, None].expand_as(c), c)
    relation = torch.full_like(c, 3)                                       # 3 = non-bonded
    relation = torch.where(rel_bits & REL_DIHEDRAL > 0, torch.full_like(c, 2), relation)
    relation = torch.where(rel_bits & REL_ANGLE > 0, torch.full_like(c, 1), relation)
    relation = torch.where(rel_bits & REL_BOND > 0, torch.zeros_like(c), relation)
    T = recipe.spec.n_atom_types
    weights = torch.zeros(S, c.shape[1], T * N_RELATIONS + 1, device=dev)
    chan = atom_chan[c] * N_RELATIONS + relation
    weights.scatter_(2, chan.unsqueeze(-1), keep.unsqueeze(-1).float())
    own_bead = (atom_bead[c] == beads[:, None]) & keep
    weights[:, :, T * N_RELATIONS] = own_bead.float()
    grid_atoms = voxelize(local, weights, grid)

    # ---- environment beads (all beads are always known)
    cb = state.cand_beads[beads]
    okb = cb >= 0
    cbc = cb.clamp_min(0)
    brel = state.image(state.centres[cbc] - centre[:, None, :])
    blocal = torch.einsum("sij,smj->smi", frames, brel)
    bkeep = okb & (blocal.abs() <= grid.cutoff + 3 * grid.sigma).all(-1)
    bchan = tab.bead_channel[cbc]
    nb_types = len(recipe.spec.bead_types)
    bweights = torch.zeros(S, cb.shape[1], nb_types, device=dev)
    bweights.scatter_(2, bchan.unsqueeze(-1), bkeep.unsqueeze(-1).float())
    grid_beads = voxelize(blocal, bweights, grid)
    full = torch.cat([grid_atoms, grid_beads], dim=1)

    # ---- energy-prior context: LJ partners among the environment, bonded partners from the tables
    excluded = (rel_bits & REL_EXCLUDED) > 0
    ti = tab.type_index[atoms][:, None].expand_as(c)
    tj = tab.type_index[c]
    lj_on = keep & ~excluded
    zero = torch.zeros((), device=dev)
    env_c6 = torch.where(lj_on, tab.lj_c6[ti, tj], zero)
    env_c12 = torch.where(lj_on, tab.lj_c12[ti, tj], zero)

    bonded = {}
    placed_ok = state.placed
    for kind, prior in tab.prior.items():
        part = prior["atoms"][atoms]                                       # (S, m, w)
        slot = prior["slots"][atoms]
        valid = prior["valid"][atoms]
        p = part.clamp_min(0)
        prel = state.image(state.positions[p] - centre[:, None, None, :])
        is_self = torch.arange(part.shape[-1], device=dev)[None, None, :] == slot[..., None]
        # every other member must be in the environment rule (placed, and earlier if initial)
        member_ok = placed_ok[p] & ((~initial[:, None, None]) | (atom_step[p] < atom_step[atoms][:, None, None]))
        if not prior_hydrogens:   # as the environment: no intramolecular H for heavy atoms
            member_ok &= ~(is_heavy[atoms][:, None, None] & ~is_heavy[p])
        active = valid & (member_ok | is_self).all(-1)
        bonded[kind] = dict(pos=prel, slot=slot, func=prior["funcs"][atoms], params=prior["params"][atoms],
                            active=active)
    return Batch(atoms, beads, full, frames, atom_chan[atoms], rel, env_c6, env_c12, bonded)
