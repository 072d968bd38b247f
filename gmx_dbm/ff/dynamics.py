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

Everything runs on the device given at construction (default cpu), in float32 by default: the Verlet list
(pruned from an outer list that the torch cell list, ``neighbors.neighbor_pairs``, searches), analytic
bonded, pair and restraint forces, the constraint iterations. Periodic images of the short vectors (bonds,
angles, dihedrals, restraints, penalties, constraints) are found at the start of a run and at every search
of the outer list; positions stay unwrapped during a run, so the images of short vectors do not change.
Measured on the 5832-atom sPS frame (300 steps, 2 CPU threads): benchmarks/bench_thermalise.py.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from .. import units
from ..errors import InputError
from ..geometry import box_heights
from .forcefield import ForceField, NonbondedSettings
from .geometry import minimum_image_fractional
from ..neighbors import neighbor_pairs

log = logging.getLogger(__name__)

PAIR_CHUNK = 1 << 19  # pairs per chunk of the force loop (temporaries of a few MB stay in the heap)


def _check_every(x: torch.Tensor) -> int:
    """Iterations between convergence checks: each check is a device->host sync on an accelerator, free
    on the CPU."""
    return 1 if x.device.type == "cpu" else 8


class _BondTables:
    """Per-bond weights of the constraint iterations for bonds (m, 2) and inverse masses (N,)."""

    def __init__(self, bonds, lengths, inv_mass):
        self.i, self.j = bonds[:, 0].contiguous(), bonds[:, 1].contiguous()
        self.lengths = lengths.unsqueeze(-1)
        self.inv_mass = inv_mass
        w = inv_mass[self.i] + inv_mass[self.j]
        # the j side's weight is stored negated: index_add_ with alpha != 1 takes a path ~8x slower on the CPU
        self.wi, self.neg_wj = (inv_mass[self.i] / w)[:, None], (-inv_mass[self.j] / w)[:, None]
        ones = torch.ones(len(self.i), dtype=inv_mass.dtype, device=inv_mass.device)
        deg = torch.zeros_like(inv_mass).index_add_(0, self.i, ones).index_add_(0, self.j, ones)
        self.relax = 1.5 / deg.clamp_min(1)[:, None]
        self.im = inv_mass[:, None]
        self.iterations = {"project": 0, "tangent": 0}   # totals, for benchmarks

    def vectors(self, x, image):
        return x.index_select(0, self.j) - x.index_select(0, self.i) + image

    def project(self, x, d0, iterations: int = 200, tol: float = 1e-4):
        """``project_bonds`` from the bond vectors d0 of x."""
        # iterate on the displacement u, not on x: bond vectors are d0 + u_j - u_i with d0 found once (the
        # periodic image does not change while atoms move a fraction of a bond), and u stays small, so
        # float32 keeps its precision at large coordinates (measured: at x ~ 40 nm, iterating on x never
        # reached 1e-4 in 200 iterations; 16-32 suffice near the origin)
        i, j = self.i, self.j
        every = _check_every(x)
        u = torch.zeros_like(x)
        buf = torch.empty_like(x)
        for it in range(iterations):
            d = d0 + u.index_select(0, j) - u.index_select(0, i)
            r = torch.linalg.vector_norm(d, dim=-1, keepdim=True).clamp_min_(1e-6)
            err = (r - self.lengths) / r
            if it % every == 0 and float(err.abs().max()) < tol:
                break
            self.iterations["project"] += 1
            corr = d.mul_(err)
            buf.zero_().index_add_(0, i, self.wi * corr).index_add_(0, j, self.neg_wj * corr)
            u.addcmul_(buf, self.relax)
        return x + u

    def tangent(self, v, u, iterations: int = 100, tol: float = 5e-3, guess=None) -> tuple:
        """``project_velocities`` along the unit bond vectors u; ``guess``: multipliers to start the
        conjugate gradients from (the same stage of the previous step: fewer iterations). Returns the
        velocities and the multipliers."""
        i, j, im = self.i, self.j, self.im
        every = _check_every(v)
        buf = torch.empty_like(v)

        def apply(lam):  # velocity change for multipliers lam, and A lam
            lu = lam.unsqueeze(-1) * u
            dv = buf.zero_().index_add_(0, i, lu).index_add_(0, j, lu.neg_()).mul_(im)
            return dv, ((dv.index_select(0, i) - dv.index_select(0, j)) * u).sum(-1)

        rel = ((v.index_select(0, j) - v.index_select(0, i)) * u).sum(-1)
        if every == 1 and float(rel.abs().max()) < tol:
            return v, torch.zeros_like(rel)
        if guess is None:
            lam = torch.zeros_like(rel)
            r = rel.clone()
        else:
            lam = guess.clone()
            r = rel - apply(lam)[1]
        p = r.clone()
        rr = (r * r).sum()
        for it in range(iterations):
            if it % every == 0 and float(r.abs().max()) < tol:
                break
            self.iterations["tangent"] += 1
            _, ap = apply(p)
            alpha = rr / (p * ap).sum().clamp_min(1e-30)
            lam.add_(alpha * p)
            r.sub_(alpha * ap)
            rr_new = (r * r).sum()
            p = r + (rr_new / rr.clamp_min(1e-30)) * p
            rr = rr_new
        dv, _ = apply(lam)
        return v + dv, lam


def project_bonds(x: torch.Tensor, box: torch.Tensor, bonds: torch.Tensor, lengths: torch.Tensor,
                  inv_mass: torch.Tensor, iterations: int = 200, tol: float = 1e-4) -> torch.Tensor:
    """Move bonded atoms onto ``lengths`` (nm): mass-weighted Jacobi iterations over all bonds at once,
    over-relaxed by the atom's bond count. x (N, 3); bonds (m, 2); inv_mass (N,); on x's device."""
    dev = x.device
    t = _BondTables(bonds.to(dev), lengths.to(device=dev, dtype=x.dtype), inv_mass.to(device=dev, dtype=x.dtype))
    d = x.index_select(0, t.j) - x.index_select(0, t.i)
    return t.project(x, minimum_image_fractional(d, torch.as_tensor(box).to(device=dev, dtype=x.dtype)), iterations, tol)


def project_velocities(x: torch.Tensor, v: torch.Tensor, box: torch.Tensor, bonds: torch.Tensor,
                       inv_mass: torch.Tensor, iterations: int = 100, tol: float = 5e-3) -> torch.Tensor:
    """Remove the relative velocity along each constrained bond (RATTLE's velocity step). The multipliers
    solve the sparse SPD system A lambda = rel (A = B M^-1 B^T) by conjugate gradients, which needs a
    third of the iterations Jacobi needs on aromatic rings. ``tol``: largest remaining relative velocity
    along a bond, nm/ps."""
    dev = x.device
    t = _BondTables(bonds.to(dev), torch.zeros(len(bonds), dtype=x.dtype, device=dev),
                    inv_mass.to(device=dev, dtype=x.dtype))
    d = minimum_image_fractional(x.index_select(0, t.j) - x.index_select(0, t.i),
                                 torch.as_tensor(box).to(device=dev, dtype=x.dtype))
    u = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True).clamp_min(1e-6)
    return t.tangent(v, u, iterations, tol)[0]


def _top2(x, x0) -> float:
    """The two largest displacements of x from x0, added."""
    moved = torch.linalg.vector_norm(x - x0, dim=-1)
    return float(torch.topk(moved, min(2, len(moved))).values.sum())


def _unit(v):
    n = torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-9)
    return v / n, n


class RestrainedLangevin:
    """BAOAB Langevin dynamics of one frame in ``ForceField`` energies plus CG restraints.

    flat: FlatTopology; centre: scipy.sparse (n_beads, n_atoms) mapping matrix (rows sum to 1);
    temperature K; steps; dt ps; friction 1/ps; mass u (every atom); k_restraint kJ/mol/nm^2 on each
    bead centre; cutoff nm for the short-range pairs (Verlet list with ``skin`` nm, pruned from an outer
    list with ``outer_skin`` nm; each is renewed when the two largest displacements since it was made add
    up to its skin, the exact criterion); nonbonded: the
    non-bonded treatment (``NonbondedSettings``, e.g. from the user's .mdp: its rvdw, rcoulomb and reaction
    field replace ``cutoff`` and the defaults); bonds/lengths: constrained bonds (None = flexible);
    max_force kJ/mol/nm caps each atom's force (only close contacts left by the generator reach it);
    device: where the tables live and the run happens (default cpu; ``run`` takes a torch.Generator on
    that device)."""

    def __init__(self, flat, centre, temperature: float, steps: int = 300, dt: float = 0.004,
                 friction: float = 5.0, mass: float = 12.0, k_restraint: float = 5000.0, cutoff: float = 0.7,
                 skin: float = 0.1, outer_skin: float = 0.4, bonds=None, lengths=None, max_force: float = 5000.0,
                 chiral=None, k_chiral: float = 2e8, chiral_fraction: float = 0.2,
                 hydrogens=None, k_hydrogen: float = 5000.0, hydrogen_max_cos: float = -0.5,
                 nonbonded: NonbondedSettings | None = None, dtype=torch.float32, device=None):
        if not temperature > 0:
            raise InputError(f"thermalisation temperature must be positive (kelvin), got {temperature}")
        self.device = torch.device("cpu") if device is None else torch.device(device)
        dev = self.device
        self.temperature = float(temperature)
        self.steps = int(steps)
        self.dt = float(dt)
        self.friction = float(friction)
        self.mass = float(mass)
        self.k_restraint = float(k_restraint)
        self.skin = float(skin)
        self.outer_skin = max(float(outer_skin), self.skin)
        self.outer = self.outer_skin     # this frame's outer skin (thinner in thin boxes)
        self.max_force = float(max_force)
        # chiral: (centres (k, 5) as gmx_dbm.stereo.find_centres, signs (k,)): a flat-bottomed penalty
        # 0.5 k (v_min - s V)^2 where the signed volume V of the heavy neighbours falls below half its ideal
        # tetrahedral value keeps MD from pushing a centre through the plane of its neighbours (measured:
        # from a rough start, 156 of 324 sPS centres inverted in 300 steps without it)
        self.chiral = None
        if chiral is not None and len(chiral[1]):
            self.chiral = (torch.as_tensor(np.asarray(chiral[0])[:, :4], dtype=torch.int64, device=dev),
                           torch.as_tensor(np.asarray(chiral[1]), dtype=dtype, device=dev))
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
            self.hydrogens = torch.as_tensor(np.asarray(hydrogens)[:, :5], dtype=torch.int64, device=dev)
        self.k_hydrogen = float(k_hydrogen)
        self.hydrogen_max_cos = float(hydrogen_max_cos)
        self.dtype = dtype
        if nonbonded is None:
            s = NonbondedSettings()
            nonbonded = NonbondedSettings(cutoff=cutoff, modifier=s.modifier, coulomb=s.coulomb, rcoulomb=cutoff,
                                          epsilon_r=s.epsilon_r, epsilon_rf=s.epsilon_rf)
        self.ff = ForceField(flat, nonbonded, dtype=dtype, device=dev)
        # (LJ, Coulomb) cut-offs asked for; ``cutoffs`` holds this frame's, shortened in thin boxes
        self.requested = (float(nonbonded.cutoff), float(nonbonded.rcoulomb) if self.ff.has_charges else 0.0)
        self.cutoffs = self.requested
        coo = centre.tocoo()
        self.c_bead = torch.as_tensor(coo.row, dtype=torch.int64, device=dev)
        self.c_atom = torch.as_tensor(coo.col, dtype=torch.int64, device=dev)
        self.c_w = torch.as_tensor(coo.data, dtype=dtype, device=dev)[:, None]
        self.n_beads = centre.shape[0]
        self.bonds = None if bonds is None else torch.as_tensor(bonds, dtype=torch.int64).to(dev)
        self.lengths = None if lengths is None else torch.as_tensor(lengths).to(device=dev, dtype=dtype)
        self._inv_mass = torch.full((flat.n_atoms,), 1.0 / self.mass, dtype=dtype, device=dev)
        self._tables = None if self.bonds is None else _BondTables(self.bonds, self.lengths, self._inv_mass)
        self.last_rebuilds = 0
        self.last_prunes = 0

    # ------------------------------------------------------------------ periodic images of short vectors
    def _images(self, x, box, ref):
        """Shifts that make the short vectors of positions x their minimum images (see module doc)."""
        im = {"bonded": self.ff.bonded_images(x, box)}
        d = x.index_select(0, self.c_atom) - ref.index_select(0, self.c_bead)
        im["restraint"] = minimum_image_fractional(d, box) - d
        for key, idx in (("chiral", None if self.chiral is None else self.chiral[0]),
                         ("hydrogen", self.hydrogens)):
            if idx is not None:
                d = x[idx[:, 1:]] - x[idx[:, :1]]
                im[key] = minimum_image_fractional(d, box) - d
        if self.bonds is not None:
            d = x.index_select(0, self._tables.j) - x.index_select(0, self._tables.i)
            im["bonds"] = minimum_image_fractional(d, box) - d
        return im

    # ------------------------------------------------------------------ restraints and penalties
    def _restraint_forces(self, x, ref, im, f):
        """Adds the bead-centre restraint's forces -dE/dx of 0.5 k |sum_a w_a (x_a - R_b)|^2 to f."""
        d = x.index_select(0, self.c_atom) - ref.index_select(0, self.c_bead) + im["restraint"]
        off = torch.zeros(self.n_beads, 3, dtype=x.dtype, device=x.device).index_add_(0, self.c_bead, self.c_w * d)
        f.index_add_(0, self.c_atom, off.index_select(0, self.c_bead).mul_(self.c_w).mul_(-self.k_restraint))

    def _chiral_forces(self, x, im, f):
        """Adds the chirality penalty's forces (v_min held constant, as its energy's gradient)."""
        idx, sign = self.chiral
        v = x[idx[:, 1:]] - x[idx[:, :1]] + im["chiral"]          # (k, 3, 3): a, b, d from the centre
        a, b, d = v[:, 0], v[:, 1], v[:, 2]
        bxd = torch.cross(b, d, dim=-1)
        vol = sign * (a * bxd).sum(-1)
        # 0.770: triple product of three unit vectors at the tetrahedral angle
        v_min = self.chiral_fraction * 0.770 * torch.linalg.vector_norm(v, dim=-1).prod(-1)
        g = (self.k_chiral * torch.relu(v_min - vol) * sign).unsqueeze(-1)     # -dE/dvol * sign
        fv = torch.stack([g * bxd, g * torch.cross(d, a, dim=-1), g * torch.cross(a, b, dim=-1)], dim=1)
        f.index_add_(0, idx[:, 1:].reshape(-1), fv.reshape(-1, 3))
        f.index_add_(0, idx[:, 0], fv.sum(1).neg_())

    def _hydrogen_forces(self, x, im, f):
        """Adds the CH-hydrogen penalty's forces."""
        idx = self.hydrogens
        v = x[idx[:, 1:]] - x[idx[:, :1]] + im["hydrogen"]        # (m, 4, 3): heavy 1-3, hydrogen
        u, n = _unit(v)
        heavy = u[:, :3].sum(1)
        uh = u[:, 3]
        cos = (uh * heavy).sum(-1)
        g = (-self.k_hydrogen * torch.relu(cos - self.hydrogen_max_cos)).unsqueeze(-1)     # -dE/dcos
        # dcos/dv = (w - (u . w) u) / |v| with w the sum of the other unit vectors (heavy for the hydrogen,
        # u_H for each heavy neighbour)
        fh = g * (heavy - cos.unsqueeze(-1) * uh) / n[:, 3]
        fk = g.unsqueeze(1) * (uh.unsqueeze(1) - (u[:, :3] * uh.unsqueeze(1)).sum(-1, keepdim=True) * u[:, :3]) \
            / n[:, :3]
        fv = torch.cat([fk, fh.unsqueeze(1)], dim=1)
        f.index_add_(0, idx[:, 1:].reshape(-1), fv.reshape(-1, 3))
        f.index_add_(0, idx[:, 0], fv.sum(1).neg_())

    def _penalty_forces(self, x, ref, im, f):
        self._restraint_forces(x, ref, im, f)
        if self.chiral is not None:
            self._chiral_forces(x, im, f)
        if self.hydrogens is not None:
            self._hydrogen_forces(x, im, f)

    def restraint_energy(self, x, box, ref) -> torch.Tensor:
        """Restraint plus penalties (kJ/mol) of positions x (N, 3): the energy whose forces the run uses."""
        d = minimum_image_fractional(x[self.c_atom] - ref[self.c_bead], box)
        off = torch.zeros(self.n_beads, 3, dtype=x.dtype, device=x.device).index_add(0, self.c_bead, self.c_w * d)
        e = 0.5 * self.k_restraint * (off * off).sum()
        if self.chiral is not None:
            idx, sign = self.chiral
            a, b, d = (minimum_image_fractional(x[idx[:, k]] - x[idx[:, 0]], box) for k in (1, 2, 3))
            vol = sign * (a * torch.cross(b, d, dim=-1)).sum(-1)
            v_min = self.chiral_fraction * 0.770 * (a.norm(dim=-1) * b.norm(dim=-1) * d.norm(dim=-1)).detach()
            e = e + 0.5 * self.k_chiral * (torch.relu(v_min - vol) ** 2).sum()
        if self.hydrogens is not None:
            idx = self.hydrogens
            heavy = sum(_unit(minimum_image_fractional(x[idx[:, k]] - x[idx[:, 0]], box))[0] for k in (1, 2, 3))
            cos = (_unit(minimum_image_fractional(x[idx[:, 4]] - x[idx[:, 0]], box))[0] * heavy).sum(-1)
            e = e + 0.5 * self.k_hydrogen * (torch.relu(cos - self.hydrogen_max_cos) ** 2).sum()
        return e

    # ------------------------------------------------------------------ forces
    def _bonded_forces(self, x, box, im):
        return self.ff.bonded_forces(x, box, im["bonded"])[1]

    def _forces(self, x, box, ref, pairs, im):
        f = self._bonded_forces(x, box, im)
        self._penalty_forces(x, ref, im, f)
        f.add_(self._pair_forces(x, pairs))
        # a generated structure can hold a few very close contacts: cap their forces instead of exploding
        mag = torch.linalg.vector_norm(f, dim=-1, keepdim=True)
        return f.mul_((self.max_force / mag).clamp_(max=1.0))

    def _pair_forces(self, x, pairs):
        """LJ (+ reaction-field Coulomb) forces over the Verlet list: parameters and periodic shifts are
        fixed per list (positions stay unwrapped during the run), so a step is gathers, one fused scalar
        expression per pair and one scatter per side. In chunks of PAIR_CHUNK pairs: temporaries of a
        58k-atom list (6 million pairs) would otherwise be ~70 MB each, which the allocator maps and unmaps
        (and the kernel zeroes) on every step."""
        i_all, j_all, shift_all, c6_all, c12_all, qq_all = pairs
        f = torch.zeros_like(x)
        r_lj, r_c = self.cutoffs
        rc_lj2, rc_c2 = r_lj * r_lj, r_c * r_c
        two_krf = 2.0 * self.ff.k_rf
        ones3 = torch.ones(3, dtype=x.dtype, device=x.device)
        for s in range(0, len(i_all), PAIR_CHUNK):
            sl = slice(s, s + PAIR_CHUNK)
            i, j = i_all[sl], j_all[sl]
            d = x.index_select(0, j).sub_(x.index_select(0, i)).add_(shift_all[sl])
            r2 = (d * d) @ ones3      # measured faster than .sum(-1) over the last dimension of 3
            inv2 = r2.reciprocal()
            inv6 = inv2 * inv2 * inv2
            # fscal = -dV/dr / r (``functional.lj_pair``, ``reaction_field_pair``); c6, c12 hold 6 c6, 12 c12
            fs = (c12_all[sl] * inv6 - c6_all[sl]).mul_(inv6).mul_(inv2)
            if qq_all is not None and rc_c2 == rc_lj2:
                fs.add_(qq_all[sl] * (inv2 * inv2.sqrt() - two_krf))
                fs = torch.where(r2 < rc_lj2, fs, 0.0)
            else:
                fs = torch.where(r2 < rc_lj2, fs, 0.0)
                if qq_all is not None:
                    fs.add_(torch.where(r2 < rc_c2, qq_all[sl] * (inv2 * inv2.sqrt() - two_krf), 0.0))
            fvec = d.mul_(fs.unsqueeze(-1))
            f.index_add_(0, j, fvec).index_add_(0, i, fvec.neg_())
        return f

    def _fit_cutoff(self, box_np):
        """A box thinner than twice (cut-off + skin) would make the minimum image ambiguous: shorten the
        cut-off for this frame (forces beyond ~0.6 nm are tiny) rather than fail."""
        # a relative margin: the searches see the box in the run's dtype, whose heights may round down
        half = 0.5 * float(box_heights(box_np).min()) * (1.0 - 1e-5)
        limit = half - self.skin
        self.cutoffs = tuple(min(r, limit) for r in self.requested)
        self.outer = max(self.skin, min(self.outer_skin, half - max(self.cutoffs)))
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

    def _outer_pairs(self, x, box):
        """The outer list of positions x: non-excluded pairs within cut-off + outer skin and their shifts,
        indices in int32 (20 bytes a pair: the list is 2-3x the Verlet list; only ``_prune`` reads it;
        int8 periodic images instead of shifts took 2x the time per prune)."""
        i, j, shift = neighbor_pairs(x, box, self.cutoff + self.outer, shifts=True, keep=self.ff.not_excluded,
                                     index_dtype=torch.int32)
        return i, j, shift.to(self.dtype)

    def _prune(self, outer, x):
        """Verlet list of positions x from the outer list: the pairs within cut-off + skin, their shifts
        and parameters (6 c6, 12 c12, f q_i q_j) in the run's dtype. Exact while the outer list is: a pair
        within cut-off + skin now was within cut-off + outer skin when the outer list was made, unless two
        atoms moved by more than the difference of the skins together (then the outer list is renewed)."""
        i_o, j_o, shift_o = outer
        ones3 = torch.ones(3, dtype=x.dtype, device=x.device)
        r2_max = (self.cutoff + self.skin) ** 2
        keep = []
        for s in range(0, len(i_o), PAIR_CHUNK):
            sl = slice(s, s + PAIR_CHUNK)
            d = x.index_select(0, j_o[sl]).sub_(x.index_select(0, i_o[sl])).add_(shift_o[sl])
            keep.append(torch.nonzero((d * d) @ ones3 < r2_max).squeeze(1).add_(s))
        keep = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.int64, device=x.device)
        i, j = i_o.index_select(0, keep).long(), j_o.index_select(0, keep).long()
        return self._parameters(i, j, shift_o.index_select(0, keep))

    def _parameters(self, i, j, shift):
        ff = self.ff
        ti, tj = ff.type_index.index_select(0, i), ff.type_index.index_select(0, j)
        flat = ti * ff.c6.shape[1] + tj
        c6 = 6.0 * ff.c6.reshape(-1).index_select(0, flat)
        c12 = 12.0 * ff.c12.reshape(-1).index_select(0, flat)
        qq = None
        if ff.has_charges:
            qq = ff.charges.index_select(0, i) * ff.charges.index_select(0, j) * ff.f_elec
        return i, j, shift, c6, c12, qq

    def _tensor(self, value):
        if torch.is_tensor(value):
            return value.detach().to(device=self.device, dtype=self.dtype)
        return torch.as_tensor(np.asarray(value), dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def run(self, positions, box, centres, rng: torch.Generator, steps: int | None = None, chiral_signs=None):
        """positions (N, 3) nm (unwrapped around their beads), box (3, 3), centres (n_beads, 3) nm (numpy
        or tensors) -> thermalised positions (N, 3) float64 numpy after ``steps`` (default: ``self.steps``)
        steps. Random numbers come from ``rng`` only (a torch.Generator on this device). ``chiral_signs``:
        this frame's handedness targets of the ``chiral`` centres (a tacticity pattern decides them per
        frame), replacing the ones given at construction."""
        dev = self.device
        if chiral_signs is not None and self.chiral is not None:
            self.chiral = (self.chiral[0], torch.as_tensor(np.asarray(chiral_signs), dtype=self.dtype, device=dev))
        box_np = np.asarray(box.detach().cpu() if torch.is_tensor(box) else box, dtype=np.float64)
        self._fit_cutoff(box_np)
        box = torch.as_tensor(box_np, dtype=self.dtype, device=dev)
        ref = self._tensor(centres)
        x = self._tensor(positions).clone()
        n = x.shape[0]
        constrained = self.bonds is not None
        tables = self._tables
        im = self._images(x, box, ref)
        if constrained:
            x = tables.project(x, tables.vectors(x, im["bonds"]))
        kt = units.KB * self.temperature
        sigma_v = math.sqrt(kt / self.mass)
        v = torch.randn(n, 3, generator=rng, dtype=self.dtype, device=dev) * sigma_v
        c1 = math.exp(-self.friction * self.dt)
        c2 = math.sqrt(1.0 - c1 * c1) * sigma_v
        h = 0.5 * self.dt
        h_m = h / self.mass
        v_cap = 6.0 * sigma_v
        outer = self._outer_pairs(x, box)
        pairs = self._prune(outer, x)
        x_outer, x_list = x.clone(), x.clone()
        rebuilds, prunes = 1, 1
        f = self._forces(x, box, ref, pairs, im)
        # multipliers of the velocity projections after the kick and after the position projection, last
        # step: starting the conjugate gradients there saves iterations (measured on the sPS frame: 622 ->
        # 575 in 30 steps); after the noise they are uncorrelated from step to step
        guesses = [None, None, None]

        def unit_bonds(x):
            d = tables.vectors(x, im["bonds"])
            return d / torch.linalg.vector_norm(d, dim=-1, keepdim=True).clamp_min_(1e-6)

        def tangent(u, v, stage):
            if not constrained:
                return v
            v, lam = tables.tangent(v, u, guess=guesses[stage])
            if stage != 1:
                guesses[stage] = lam
            return v

        u = unit_bonds(x) if constrained else None
        v = tangent(u, v, 0)
        for _ in range(self.steps if steps is None else int(steps)):
            # velocities are made tangent after the kick, the noise and the position projection (without
            # the first, measured: the constrained sPS melt heats from 453 K to ~700 K in 80 steps)
            v = tangent(u, v.add_(f, alpha=h_m), 0)
            x = x + h * v
            if constrained:
                u = unit_bonds(x)
            noise = torch.randn(n, 3, generator=rng, dtype=self.dtype, device=dev)
            v = tangent(u, noise.mul_(c2).add_(v, alpha=c1), 1)
            x = x.add_(v, alpha=h)
            if constrained:
                xp = tables.project(x, tables.vectors(x, im["bonds"]))
                u = unit_bonds(xp)
                v = tangent(u, (xp - x).div_(h).add_(v), 2)
                x = xp
            # exact Verlet criterion: no pair can have closed in by more than the two largest displacements.
            # The Verlet list is pruned from an outer list, which is searched afresh ~4x less often (measured
            # on the sPS frame, 300 steps, one thread: 47 searches, 13.2 s, with one list; with an outer skin
            # of 0.4 nm 11 searches and 47 prunes, 7.4 + 2.2 s; 0.3 nm: 16 searches, 9.7 + 1.9 s)
            if _top2(x, x_list) > self.skin:
                # pruning at x is exact while no pair has closed in by more than outer - skin since the
                # outer list was made
                pairs = None   # the old lists go before the new ones are made (peak memory)
                if _top2(x, x_outer) > self.outer - self.skin:
                    outer = None
                    outer = self._outer_pairs(x, box)
                    im = self._images(x, box, ref)
                    x_outer = x.clone()
                    rebuilds += 1
                pairs = self._prune(outer, x)
                x_list = x.clone()
                prunes += 1
            f = self._forces(x, box, ref, pairs, im)
            v.add_(f, alpha=h_m)
            # an atom stuck in a clash (e.g. threaded through a ring) would reach F/(m gamma) ~ 80 nm/ps under
            # the force cap and force a pair-list rebuild every step (measured on a 23k-atom box); at
            # equilibrium |v| > 6 sigma has probability ~1e-7, so capping there changes nothing else
            speed = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
            v.mul_((v_cap / speed).clamp_(max=1.0))
        log.debug("thermalised %d steps at %g K, %d pair searches, %d prunes", self.steps, self.temperature,
                  rebuilds, prunes)
        self.last_rebuilds, self.last_prunes = rebuilds, prunes
        return x.double().cpu().numpy()
