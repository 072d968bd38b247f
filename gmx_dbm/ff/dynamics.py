"""Thermalisation of a backmapped frame: Langevin dynamics in the all-atom force field with every bead
restrained to its CG position.

The generator places atoms from local environments; what it cannot see (strained angles where two beads'
atoms meet, contacts that are slightly too close, backbone torsions set by several beads at once) relaxes
in a short run of the force field at the CG simulation's temperature. The restraint
0.5 k |centre_b(r) - R_b|^2 on each bead's mapped centre keeps the structure on the CG frame, so the run
samples p(r | R) rather than drifting. Configurational sampling only: masses are a free choice (all atoms
get ``mass``, which allows a 4 fs step with the stiff hydrogen angles), the integrator is BAOAB (Leimkuhler
& Matthews 2013; its configurational error is small at these steps), bonds may be held at their lengths
(SHAKE-like projection after each position update, velocities corrected to match).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from .. import units
from ..errors import InputError
from ..geometry import box_heights
from . import functional as F
from .forcefield import ForceField, NonbondedSettings
from .geometry import minimum_image_one_box as minimum_image

log = logging.getLogger(__name__)

PAIR_CHUNK = 1 << 19  # pairs per chunk of the force loop (temporaries of a few MB stay in the heap)


def project_bonds(x: torch.Tensor, box: torch.Tensor, bonds: torch.Tensor, lengths: torch.Tensor,
                  inv_mass: torch.Tensor, iterations: int = 200, tol: float = 1e-4) -> torch.Tensor:
    """Move bonded atoms onto ``lengths`` (nm): mass-weighted Jacobi iterations over all bonds at once,
    over-relaxed by the atom's bond count. x (N, 3); bonds (m, 2); inv_mass (N,)."""
    i, j = bonds[:, 0], bonds[:, 1]
    w = inv_mass[i] + inv_mass[j]
    wi, wj = (inv_mass[i] / w)[:, None], (inv_mass[j] / w)[:, None]
    deg = torch.zeros(x.shape[0], dtype=x.dtype).index_add_(0, i, torch.ones(len(i), dtype=x.dtype))
    deg = deg.index_add_(0, j, torch.ones(len(j), dtype=x.dtype))
    relax = 1.5 / deg.clamp_min(1)[:, None]
    # iterate on the displacement u, not on x: bond vectors are d0 + u_j - u_i with d0 found once (the
    # periodic image does not change while atoms move a fraction of a bond), and u stays small, so
    # float32 keeps its precision at large coordinates (measured: at x ~ 40 nm, iterating on x never
    # reached 1e-4 in 200 iterations; 16-32 suffice near the origin)
    d0 = minimum_image(x[j] - x[i], box)
    u = torch.zeros_like(x)
    for _ in range(iterations):
        d = d0 + u[j] - u[i]
        r = d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        err = (r - lengths[:, None]) / r
        if float(err.abs().max()) < tol:
            break
        corr = d * err
        u = u + (torch.zeros_like(x).index_add_(0, i, wi * corr).index_add_(0, j, -wj * corr)) * relax
    return x + u


def project_velocities(x: torch.Tensor, v: torch.Tensor, box: torch.Tensor, bonds: torch.Tensor,
                       inv_mass: torch.Tensor, iterations: int = 100, tol: float = 5e-3) -> torch.Tensor:
    """Remove the relative velocity along each constrained bond (RATTLE's velocity step). The multipliers
    solve the sparse SPD system A lambda = rel (A = B M^-1 B^T) by conjugate gradients, which needs a
    third of the iterations Jacobi needs on aromatic rings. ``tol``: largest remaining relative velocity
    along a bond, nm/ps."""
    i, j = bonds[:, 0], bonds[:, 1]
    d = minimum_image(x[j] - x[i], box)
    u = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    im = inv_mass[:, None]

    def apply(lam):  # velocity change for multipliers lam, and A lam
        g = torch.zeros_like(v).index_add_(0, i, lam[:, None] * u).index_add_(0, j, -lam[:, None] * u)
        dv = im * g
        return dv, ((dv[i] - dv[j]) * u).sum(-1)

    rel = ((v[j] - v[i]) * u).sum(-1)
    if float(rel.abs().max()) < tol:
        return v
    lam = torch.zeros_like(rel)
    r = rel.clone()
    p = r.clone()
    rr = (r * r).sum()
    for _ in range(iterations):
        _, ap = apply(p)
        alpha = rr / (p * ap).sum().clamp_min(1e-30)
        lam = lam + alpha * p
        r = r - alpha * ap
        if float(r.abs().max()) < tol:
            break
        rr_new = (r * r).sum()
        p = r + (rr_new / rr) * p
        rr = rr_new
    dv, _ = apply(lam)
    return v + dv


class RestrainedLangevin:
    """BAOAB Langevin dynamics of one frame in ``ForceField`` energies plus CG restraints.

    flat: FlatTopology; centre: scipy.sparse (n_beads, n_atoms) mapping matrix (rows sum to 1);
    temperature K; steps; dt ps; friction 1/ps; mass u (every atom); k_restraint kJ/mol/nm^2 on each
    bead centre; cutoff nm for the short-range pairs (Verlet list with ``skin`` nm, rebuilt when an atom
    has moved half the skin); nonbonded: the non-bonded treatment (``NonbondedSettings``, e.g. from the
    user's .mdp: its rvdw, rcoulomb and reaction field replace ``cutoff`` and the defaults);
    bonds/lengths: constrained bonds (None = flexible); max_force kJ/mol/nm caps each atom's force (only
    close contacts left by the generator reach it)."""

    def __init__(self, flat, centre, temperature: float, steps: int = 300, dt: float = 0.004,
                 friction: float = 5.0, mass: float = 12.0, k_restraint: float = 5000.0, cutoff: float = 0.7,
                 skin: float = 0.1, bonds=None, lengths=None, max_force: float = 5000.0,
                 chiral=None, k_chiral: float = 2e8, chiral_fraction: float = 0.2,
                 hydrogens=None, k_hydrogen: float = 5000.0, hydrogen_max_cos: float = -0.5,
                 nonbonded: NonbondedSettings | None = None, dtype=torch.float32):
        if not temperature > 0:
            raise InputError(f"thermalisation temperature must be positive (kelvin), got {temperature}")
        self.temperature = float(temperature)
        self.steps = int(steps)
        self.dt = float(dt)
        self.friction = float(friction)
        self.mass = float(mass)
        self.k_restraint = float(k_restraint)
        self.skin = float(skin)
        self.max_force = float(max_force)
        # chiral: (centres (k, 5) as gmx_dbm.stereo.find_centres, signs (k,)): a flat-bottomed penalty
        # 0.5 k (v_min - s V)^2 where the signed volume V of the heavy neighbours falls below half its ideal
        # tetrahedral value keeps MD from pushing a centre through the plane of its neighbours (measured:
        # from a rough start, 156 of 324 sPS centres inverted in 300 steps without it)
        self.chiral = None
        if chiral is not None and len(chiral[1]):
            self.chiral = (torch.as_tensor(np.asarray(chiral[0])[:, :4], dtype=torch.int64),
                           torch.as_tensor(np.asarray(chiral[1]), dtype=dtype))
        self.k_chiral = float(k_chiral)
        self.chiral_fraction = float(chiral_fraction)
        # hydrogens: CH centres (m, 5) whose hydrogen must stay opposite its three heavy neighbours: a
        # flat-bottomed penalty 0.5 k (cos - cos_max)^2 on cos = u_H . (u_1 + u_2 + u_3) (ideal tetrahedron:
        # -1). The chirality penalty holds the heavy atoms only; a hydrogen the dynamics push onto the heavy
        # side would later make a minimisation (e.g. relax) push the carbon through instead (measured: one of
        # 27 centres of three sPS chains inverted in relax that way); moving the hydrogen back after the
        # run instead put it into close contacts (LJ of a 5832-atom frame -8621 -> -7034 kJ/mol)
        self.hydrogens = None
        if hydrogens is not None and len(hydrogens):
            self.hydrogens = torch.as_tensor(np.asarray(hydrogens)[:, :5], dtype=torch.int64)
        self.k_hydrogen = float(k_hydrogen)
        self.hydrogen_max_cos = float(hydrogen_max_cos)
        self.dtype = dtype
        if nonbonded is None:
            s = NonbondedSettings()
            nonbonded = NonbondedSettings(cutoff=cutoff, modifier=s.modifier, coulomb=s.coulomb, rcoulomb=cutoff,
                                          epsilon_r=s.epsilon_r, epsilon_rf=s.epsilon_rf)
        self.ff = ForceField(flat, nonbonded, dtype=dtype)
        # (LJ, Coulomb) cut-offs asked for; ``cutoffs`` holds this frame's, shortened in thin boxes
        self.requested = (float(nonbonded.cutoff), float(nonbonded.rcoulomb) if self.ff.has_charges else 0.0)
        self.cutoffs = self.requested
        coo = centre.tocoo()
        self.c_bead = torch.as_tensor(coo.row, dtype=torch.int64)
        self.c_atom = torch.as_tensor(coo.col, dtype=torch.int64)
        self.c_w = torch.as_tensor(coo.data, dtype=dtype)
        self.n_beads = centre.shape[0]
        self.bonds = None if bonds is None else torch.as_tensor(bonds, dtype=torch.int64)
        self.lengths = None if lengths is None else torch.as_tensor(lengths, dtype=dtype)

    def _restraint(self, x, box, ref):
        d = minimum_image(x[self.c_atom] - ref[self.c_bead], box)
        off = torch.zeros(self.n_beads, 3, dtype=x.dtype).index_add_(0, self.c_bead, self.c_w[:, None] * d)
        return 0.5 * self.k_restraint * (off * off).sum()

    def _chiral_penalty(self, x, box):
        idx, sign = self.chiral
        c = x[idx[:, 0]]
        a, b, d = (minimum_image(x[idx[:, k]] - c, box) for k in (1, 2, 3))
        vol = sign * (a * torch.cross(b, d, dim=-1)).sum(-1)
        # 0.770: triple product of three unit vectors at the tetrahedral angle
        v_min = self.chiral_fraction * 0.770 * (a.norm(dim=-1) * b.norm(dim=-1) * d.norm(dim=-1)).detach()
        return 0.5 * self.k_chiral * (torch.relu(v_min - vol) ** 2).sum()

    def _hydrogen_penalty(self, x, box):
        idx = self.hydrogens
        c = x[idx[:, 0]]

        def unit(v):
            return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        heavy = sum(unit(minimum_image(x[idx[:, k]] - c, box)) for k in (1, 2, 3))
        cos = (unit(minimum_image(x[idx[:, 4]] - c, box)) * heavy).sum(-1)
        return 0.5 * self.k_hydrogen * (torch.relu(cos - self.hydrogen_max_cos) ** 2).sum()

    def _forces(self, x, box, ref, pairs):
        xg = x.detach().requires_grad_(True)
        e = self.ff.bonded_terms(xg[None], box[None])
        energy = sum(v[0] for v in e.values()) + self._restraint(xg, box, ref)
        if self.chiral is not None:
            energy = energy + self._chiral_penalty(xg, box)
        if self.hydrogens is not None:
            energy = energy + self._hydrogen_penalty(xg, box)
        (grad,) = torch.autograd.grad(energy, xg)
        f = self._pair_forces(x, pairs) - grad
        # a generated structure can hold a few very close contacts: cap their forces instead of exploding
        mag = f.norm(dim=-1, keepdim=True)
        return torch.where(mag > self.max_force, f * (self.max_force / mag.clamp_min(1e-12)), f)

    def _pair_forces(self, x, pairs):
        """LJ (+ reaction-field Coulomb) forces over the Verlet list: parameters and periodic shifts are
        fixed per list (positions stay unwrapped during the run), so a step is gathers and one scatter.
        In chunks of PAIR_CHUNK pairs: temporaries of a 58k-atom list (6 million pairs) would otherwise be
        ~70 MB each, which the allocator maps and unmaps (and the kernel zeroes) on every step."""
        i_all, j_all, shift_all, c6_all, c12_all, qq_all = pairs
        f = torch.zeros_like(x)
        shift = self.ff.settings.modifier == "potential-shift"
        r_lj, r_c = self.cutoffs
        for s in range(0, len(i_all), PAIR_CHUNK):
            sl = slice(s, s + PAIR_CHUNK)
            i, j = i_all[sl], j_all[sl]
            d = x[j] - x[i] + shift_all[sl]
            r2 = (d * d).sum(-1)
            _, fscal = F.lj_pair(r2, c6_all[sl], c12_all[sl], r_lj, shift)
            if qq_all is not None:
                fscal = fscal + F.reaction_field_pair(r2, qq_all[sl], r_c, self.ff.k_rf, self.ff.c_rf)[1]
            fvec = fscal[:, None] * d
            f.index_add_(0, j, fvec).index_add_(0, i, -fvec)
        return f

    def _fit_cutoff(self, box_np):
        """A box thinner than twice (cut-off + skin) would make the minimum image ambiguous: shorten the
        cut-off for this frame (forces beyond ~0.6 nm are tiny) rather than fail."""
        limit = 0.5 * float(box_heights(box_np).min()) - self.skin
        self.cutoffs = tuple(min(r, limit) for r in self.requested)
        if self.cutoffs != self.requested:
            log.warning("box height %.3f nm: thermalisation cut-off shortened to %.3f nm",
                        2 * (limit + self.skin), self.cutoff)
        if self.cutoffs[0] < 0.3:
            raise InputError(f"box too small for the thermalisation (smallest height {2 * (limit + self.skin):.3f} "
                             "nm): switch it off (--md-steps 0)")

    @property
    def cutoff(self) -> float:
        """The pair-list cut-off of the current frame (nm): the longer of the LJ and Coulomb ones."""
        return max(self.cutoffs)

    def _pairs(self, x, box_np):
        xd = x.detach().double()
        i, j = self.ff.pairs(xd, box_np, cutoff=self.cutoff + self.skin)
        x64, box64 = xd, torch.from_numpy(box_np)
        d = x64[j] - x64[i]
        shift = (minimum_image(d, box64) - d).to(self.dtype)
        ti, tj = self.ff.type_index[i], self.ff.type_index[j]
        c6 = self.ff.c6[ti, tj].to(self.dtype)
        c12 = self.ff.c12[ti, tj].to(self.dtype)
        qq = (self.ff.charges[i] * self.ff.charges[j] * self.ff.f_elec).to(self.dtype) if self.ff.has_charges else None
        return i, j, shift, c6, c12, qq

    @torch.no_grad()
    def run(self, positions, box, centres, rng: torch.Generator, steps: int | None = None, chiral_signs=None):
        """positions (N, 3) nm (unwrapped around their beads), box (3, 3), centres (n_beads, 3) nm ->
        thermalised positions (N, 3) float64 numpy after ``steps`` (default: ``self.steps``) steps. Random
        numbers come from ``rng`` only. ``chiral_signs``: this frame's handedness targets of the ``chiral``
        centres (a tacticity pattern decides them per frame), replacing the ones given at construction."""
        if chiral_signs is not None and self.chiral is not None:
            self.chiral = (self.chiral[0], torch.as_tensor(np.asarray(chiral_signs), dtype=self.dtype))
        box_np = np.asarray(box, dtype=np.float64)
        self._fit_cutoff(box_np)
        box = torch.as_tensor(box_np, dtype=self.dtype)
        ref = torch.as_tensor(np.asarray(centres), dtype=self.dtype)
        x = torch.as_tensor(np.asarray(positions), dtype=self.dtype).clone()
        n = x.shape[0]
        inv_m = torch.full((n,), 1.0 / self.mass, dtype=self.dtype)
        if self.bonds is not None:
            x = project_bonds(x, box, self.bonds, self.lengths, inv_m)
        kt = units.KB * self.temperature
        sigma_v = math.sqrt(kt / self.mass)
        v = torch.randn(n, 3, generator=rng).to(self.dtype) * sigma_v
        c1 = math.exp(-self.friction * self.dt)
        c2 = math.sqrt(1.0 - c1 * c1) * sigma_v
        h = 0.5 * self.dt
        v_cap = 6.0 * sigma_v
        pairs = self._pairs(x, box_np)
        x_list = x.clone()
        rebuilds = 1
        with torch.enable_grad():
            f = self._forces(x, box, ref, pairs)
        constrained = self.bonds is not None

        def tangent(x, v):
            return project_velocities(x, v, box, self.bonds, inv_m) if constrained else v

        v = tangent(x, v)
        for _ in range(self.steps if steps is None else int(steps)):
            # velocities are made tangent after the kick, the noise and the position projection (without
            # the first, measured: the constrained sPS melt heats from 453 K to ~700 K in 80 steps)
            v = tangent(x, v + h * f / self.mass)
            x = x + h * v
            v = tangent(x, c1 * v + c2 * torch.randn(n, 3, generator=rng).to(self.dtype))
            x = x + h * v
            if constrained:
                xp = project_bonds(x, box, self.bonds, self.lengths, inv_m)
                v = tangent(xp, v + (xp - x) / h)
                x = xp
            moved = float((x - x_list).norm(dim=-1).max())
            if moved > 0.5 * self.skin:
                pairs = self._pairs(x, box_np)
                x_list = x.clone()
                rebuilds += 1
            with torch.enable_grad():
                f = self._forces(x, box, ref, pairs)
            v = v + h * f / self.mass
            # an atom stuck in a clash (e.g. threaded through a ring) would reach F/(m gamma) ~ 80 nm/ps under
            # the force cap and force a pair-list rebuild every step (measured on a 23k-atom box); at
            # equilibrium |v| > 6 sigma has probability ~1e-7, so capping there changes nothing else
            speed = v.norm(dim=-1, keepdim=True)
            v = torch.where(speed > v_cap, v * (v_cap / speed.clamp_min(1e-12)), v)
        log.debug("thermalised %d steps at %g K, %d pair-list builds", self.steps, self.temperature, rebuilds)
        self.last_rebuilds = rebuilds
        return x.double().numpy()
