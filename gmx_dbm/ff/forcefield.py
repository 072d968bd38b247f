"""The all-atom force field of a topology as a batched, periodic, differentiable torch module.

``ForceField(flat, settings)(positions (B,N,3) nm, box (B,3,3) nm rows a,b,c)`` returns per-frame energies
(B,) in kJ/mol: bond, angle, proper (dihedral funcs 1, 3, 9), improper (2, 4), lj_sr, lj_14, and with
charges coulomb_sr and coulomb_14. Non-bonded terms follow GROMACS' Verlet scheme: plain cut-off with
potential shift (vdw-modifier), reaction field including GROMACS' exclusion correction and self term,
no dispersion correction. Short-range pairs come from the torch cell-list search on the positions'
device (``neighbors.neighbor_pairs``; boxes thinner than twice the cut-off are refused, as grompp does),
their vectors from the fractional minimum image (exact in any box shape); their energy and gradient come
from one pair kernel (``functional.lj_pair``, ``reaction_field_pair``), chunk by chunk with analytic
forces, so memory stays O(pairs) of ints. ``energies`` and ``pair_energies`` are the energies-only entry
points (evaluation, quality flags); the thermalisation uses ``pairs``, the same kernel's forces and
``bonded_forces`` (analytic bonded forces of one frame, equal to the autograd gradient of
``bonded_terms``). ``device``: where the tables live (default cpu); numpy inputs are moved there.
The gradient flows to positions only (not to the box) and only to first order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import units
from ..errors import ConfigError
from ..topology import FlatTopology
from . import functional as F
from .geometry import angle, dihedral, minimum_image, minimum_image_fractional, norm
from ..neighbors import check_cutoff, neighbor_pairs

log = logging.getLogger(__name__)

ENERGY_KEYS = ("bond", "angle", "proper", "improper", "lj_sr", "lj_14", "coulomb_sr", "coulomb_14")
# GROMACS .edr term names summed into each key (for comparisons with gmx energy).
GROMACS_TERMS = {
    "bond": ("Bond", "G96Bond"),
    "angle": ("Angle", "G96Angle"),
    "proper": ("Proper Dih.", "Ryckaert-Bell."),
    "improper": ("Improper Dih.", "Per. Imp. Dih."),
    "lj_sr": ("LJ (SR)",),
    "lj_14": ("LJ-14",),
    "coulomb_sr": ("Coulomb (SR)",),
    "coulomb_14": ("Coulomb-14",),
}


@dataclass(frozen=True)
class NonbondedSettings:
    """Non-bonded treatment (GROMACS mdp names in brackets). Defaults: the project's reference
    settings (1.0 nm cut-offs, potential-shift, reaction field with epsilon_rf 2.5, no DispCorr).

    cutoff [rvdw] nm; modifier [vdw-modifier] 'potential-shift' or 'none'; coulomb [coulombtype]
    'reaction-field', 'cut-off' (= reaction field with epsilon_rf 1, as GROMACS' Verlet scheme) or 'none';
    rcoulomb nm; epsilon_r; epsilon_rf (0 = infinity)."""
    cutoff: float = 1.0
    modifier: str = "potential-shift"
    coulomb: str = "reaction-field"
    rcoulomb: float = 1.0
    epsilon_r: float = 1.0
    epsilon_rf: float = 2.5

    def __post_init__(self):
        if self.modifier not in ("potential-shift", "none"):
            raise ConfigError(f"vdw modifier '{self.modifier}' not supported (potential-shift or none)")
        if self.coulomb not in ("reaction-field", "cut-off", "none"):
            raise ConfigError(f"coulomb type '{self.coulomb}' not supported (reaction-field, cut-off or none)")
        if self.cutoff <= 0 or self.rcoulomb <= 0:
            raise ConfigError("cut-offs must be positive")

    @property
    def rf_epsilon(self) -> float:
        return 1.0 if self.coulomb == "cut-off" else self.epsilon_rf


# Ewald-type electrostatics, which the force field does not implement
EWALD_TYPES = ("pme", "ewald", "p3m-ad", "pme-user", "pme-user-switch")


def settings_from_mdp(mdp, ewald_as_reaction_field: bool = False) -> NonbondedSettings:
    """Non-bonded settings from a parsed .mdp file (``gmx_dbm.io.mdp.MdpFile``: ``get(key, default)`` on
    normalised keys, ``error(key, message)`` -> ConfigError with path and line). Keys that do not matter
    here are ignored; unsupported values of the ones that matter are errors; missing keys take GROMACS'
    defaults. ``ewald_as_reaction_field``: read PME/Ewald as a reaction field with epsilon-rf infinity
    at rcoulomb (a short-range stand-in that is good enough for forces in a short run, not for energies)."""
    def num(key, default):
        value = mdp.get(key, "")
        if value == "":
            return default
        try:
            return float(value)
        except ValueError:
            raise mdp.error(key, f"{key} must be a number, got '{value}'") from None

    scheme = mdp.get("cutoff-scheme", "verlet")
    if scheme.lower() != "verlet":
        raise mdp.error("cutoff-scheme", f"cutoff-scheme {scheme}: only Verlet is supported "
                                         "(GROMACS 2020+ has no group scheme)")
    vdwtype = mdp.get("vdwtype", "cut-off")
    if vdwtype.lower() != "cut-off":
        raise mdp.error("vdwtype", f"vdwtype {vdwtype} not supported (cut-off with a modifier only)")
    given = mdp.get("vdw-modifier", "potential-shift")
    modifier = {"potential-shift-verlet": "potential-shift", "potential-shift": "potential-shift",
                "none": "none"}.get(given.lower())
    if modifier is None:
        raise mdp.error("vdw-modifier", f"vdw-modifier {given} not supported (Potential-shift or None)")
    given = mdp.get("coulombtype", "cut-off")
    coul = given.lower()
    ewald = False
    if coul in ("reaction-field", "reaction-field-zero"):
        coul = "reaction-field"
    elif coul in EWALD_TYPES and ewald_as_reaction_field:
        log.info("%s: coulombtype %s read as a reaction field with epsilon-rf infinity at rcoulomb",
                 mdp.path, given)
        coul, ewald = "reaction-field", True
    elif coul != "cut-off":
        raise mdp.error("coulombtype", f"coulombtype {given} not supported "
                                       "(Reaction-Field or Cut-off; PME is not implemented)")
    disp = mdp.get("dispcorr", "no")
    if disp.lower() != "no":
        log.warning("DispCorr %s is not included in gmx_dbm's energies", disp)
    settings = NonbondedSettings(cutoff=num("rvdw", 1.0), modifier=modifier, coulomb=coul,
                                 rcoulomb=num("rcoulomb", 1.0), epsilon_r=num("epsilon-r", 1.0),
                                 epsilon_rf=0.0 if ewald else num("epsilon-rf", 0.0))
    if settings.epsilon_r == 0:
        raise mdp.error("epsilon-r", "epsilon-r 0 (infinity) switches electrostatics off; not supported")
    return settings


class _Nonbonded(torch.autograd.Function):
    """Short-range LJ and reaction-field energies of one frame with analytic gradients (saved in
    forward, so no per-pair autograd graph is kept)."""

    @staticmethod
    def forward(ctx, pos, box, ff, pairs):
        e_lj, e_c, g_lj, g_c = ff._nonbonded_frame(pos.detach(), box.detach(), pairs)
        ctx.save_for_backward(g_lj, g_c)
        return e_lj, e_c

    @staticmethod
    def backward(ctx, d_lj, d_c):
        g_lj, g_c = ctx.saved_tensors
        return d_lj * g_lj + d_c * g_c, None, None, None


class ForceField(nn.Module):
    """GROMACS energies of a ``FlatTopology`` (see module doc). ``chunk``: pairs per block in the
    non-bonded loop (memory ~ chunk x 200 bytes); ``device``: where the tables live (default cpu)."""

    def __init__(self, flat: FlatTopology, settings: NonbondedSettings | None = None,
                 dtype=torch.float64, chunk: int = 1_000_000, device=None):
        super().__init__()
        self.settings = settings or NonbondedSettings()
        self.n_atoms = flat.n_atoms
        self.chunk = int(chunk)
        self.dtype = dtype
        self.defaults = flat.defaults
        self.terms = []   # (key, name, func) of registered bonded terms
        for kind, funcs in flat.bonded.items():
            for func, (idx, par) in sorted(funcs.items()):
                if len(idx) == 0:
                    continue
                name = f"{kind}_{func}"
                self.register_buffer(f"{name}_idx", torch.as_tensor(idx, dtype=torch.int64))
                self.register_buffer(f"{name}_par", torch.as_tensor(par, dtype=dtype))
                self.terms.append((kind, func, name))
        self.register_buffer("type_index", torch.as_tensor(flat.type_index, dtype=torch.int64))
        self.register_buffer("c6", torch.as_tensor(flat.lj_c6, dtype=dtype))
        self.register_buffer("c12", torch.as_tensor(flat.lj_c12, dtype=dtype))
        self.register_buffer("charges", torch.as_tensor(flat.charges, dtype=dtype))
        ex = np.asarray(flat.exclusions, dtype=np.int64).reshape(-1, 2)
        self.register_buffer("excl", torch.as_tensor(ex))
        self.register_buffer("excl_keys", torch.sort(torch.as_tensor(ex[:, 0] * self.n_atoms + ex[:, 1]))[0])
        s = self.settings
        self.has_charges = bool(np.any(flat.charges != 0)) and s.coulomb != "none"
        self.f_elec = units.ONE_4PI_EPS0 / s.epsilon_r
        self.k_rf, self.c_rf = F.reaction_field_constants(s.rcoulomb, s.rf_epsilon, s.epsilon_r)
        if self.has_charges and s.rcoulomb != s.cutoff:
            log.info("rcoulomb %.3f != rvdw %.3f: separate cut-offs", s.rcoulomb, s.cutoff)
        self.to(torch.device("cpu") if device is None else torch.device(device))

    @property
    def device(self) -> torch.device:
        return self.type_index.device

    # ------------------------------------------------------------------ bonded
    def _bonded(self, x, box, kind, func, idx, par):
        if kind == "bonds":
            r = norm(minimum_image(x[:, idx[:, 1]] - x[:, idx[:, 0]], box))
            if func == 1:
                return F.harmonic_bond(r, par[:, 0], par[:, 1])
            return F.g96_bond(r, par[:, 0], par[:, 1])
        if kind == "angles":
            r_ji = minimum_image(x[:, idx[:, 0]] - x[:, idx[:, 1]], box)
            r_jk = minimum_image(x[:, idx[:, 2]] - x[:, idx[:, 1]], box)
            if func == 1:
                return F.harmonic_angle(angle(r_ji, r_jk), par[:, 0], par[:, 1])
            cos = (r_ji * r_jk).sum(-1) / (norm(r_ji) * norm(r_jk))
            return 0.5 * par[:, 1] * (cos - torch.cos(par[:, 0] * F.DEG)) ** 2
        if kind == "dihedrals":
            xi, xj, xk, xl = (x[:, idx[:, c]] for c in range(4))
            phi = dihedral(minimum_image(xi - xj, box), minimum_image(xk - xj, box), minimum_image(xk - xl, box))
            if func in (1, 4, 9):
                return F.periodic_dihedral(phi, par[:, 0], par[:, 1], par[:, 2])
            if func == 2:
                return F.harmonic_improper(phi, par[:, 0], par[:, 1])
            if func == 3:
                return F.ryckaert_bellemans(phi, par[:, :6])
        raise ValueError(f"unsupported {kind} func {func}")  # excluded by the reader

    def _pairs14(self, x, box, idx, par):
        d = minimum_image(x[:, idx[:, 1]] - x[:, idx[:, 0]], box)
        r2 = (d * d).sum(-1)
        lj = F.lennard_jones(r2, par[:, 0], par[:, 1], cutoff=None)
        out = {"lj_14": lj.sum(-1)}
        if self.has_charges:
            qq = self.charges[idx[:, 0]] * self.charges[idx[:, 1]] * (self.f_elec * self.defaults.fudge_qq)
            out["coulomb_14"] = F.coulomb(torch.sqrt(r2), qq).sum(-1)
        return out

    # ------------------------------------------------------------------ non-bonded
    @property
    def rmax(self) -> float:
        """The longest non-bonded cut-off (nm)."""
        s = self.settings
        return max(s.cutoff, s.rcoulomb if self.has_charges else 0.0)

    def check_box(self, box, cutoff: float | None = None, where: str = "") -> None:
        """grompp's rule: every cut-off at most half the smallest box height, else the minimum image is
        not unique and pairs would be missed. InputError otherwise (also for an unusable box)."""
        check_cutoff(box, self.rmax if cutoff is None else float(cutoff), where=where or None)

    def not_excluded(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Bool mask of the pairs (i < j, int64) that are not excluded (``neighbor_pairs``' ``keep``)."""
        if not len(self.excl_keys):
            return torch.ones(len(i), dtype=torch.bool, device=i.device)
        excl = self.excl_keys.to(i.device)
        keys = i * self.n_atoms + j
        loc = torch.searchsorted(excl, keys).clamp_(max=len(excl) - 1)
        return excl.index_select(0, loc) != keys

    def pairs(self, positions, box, cutoff: float | None = None) -> tuple:
        """Non-excluded pairs (i < j) of one frame within ``cutoff`` (default: the force field's longest
        cut-off) as int64 tensors on the positions' device (numpy positions: the force field's device),
        from the exact cell-list search (``neighbors.neighbor_pairs``, which refuses boxes thinner than
        twice the cut-off as ``check_box``)."""
        rmax = self.rmax if cutoff is None else float(cutoff)
        x = positions.detach() if torch.is_tensor(positions) else torch.as_tensor(positions, device=self.device)
        return neighbor_pairs(x, box, rmax, keep=self.not_excluded)

    def _pair_kernel(self, pos, box, ii, jj):
        """Per-pair short-range (LJ energy, LJ fscal, Coulomb energy, Coulomb fscal, vectors d) for pairs
        (ii, jj) of one frame (``functional.lj_pair`` / ``reaction_field_pair``)."""
        s = self.settings
        # the fractional reduction finds the image within the cut-off in any box shape (the brick
        # reduction of ``minimum_image`` may return a longer one outside GROMACS' shape limits, which
        # would drop the pair)
        d = minimum_image_fractional(pos[jj] - pos[ii], box)
        r2 = (d * d).sum(-1)
        ti, tj = self.type_index[ii], self.type_index[jj]
        v_lj, f_lj = F.lj_pair(r2, self.c6[ti, tj], self.c12[ti, tj], s.cutoff, s.modifier == "potential-shift")
        if self.has_charges:
            qq = self.charges[ii] * self.charges[jj] * self.f_elec
            v_c, f_c = F.reaction_field_pair(r2, qq, s.rcoulomb, self.k_rf, self.c_rf)
        else:
            v_c = f_c = torch.zeros_like(v_lj)
        return v_lj, f_lj, v_c, f_c, d

    @torch.no_grad()
    def pair_energies(self, positions, box, i, j) -> tuple:
        """Short-range (LJ, Coulomb) energy of each given non-excluded pair (kJ/mol, tensors (m,))."""
        pos, bx = self._as_frame(positions, box)
        out_lj, out_c = [], []
        for a in range(0, len(i), self.chunk):
            v_lj, _, v_c, _, _ = self._pair_kernel(pos, bx, i[a:a + self.chunk], j[a:a + self.chunk])
            out_lj.append(v_lj)
            out_c.append(v_c)
        if not out_lj:
            z = pos.new_zeros(0)
            return z, z
        return torch.cat(out_lj), torch.cat(out_c)

    def pair_terms(self, pos, box, i, j):
        """Short-range LJ and Coulomb energies and their gradients (N, 3) over the given non-excluded pairs
        (i < j) of one frame; pairs beyond the cut-offs contribute nothing, so a Verlet list with a skin
        may be passed. Returns e_lj, e_coulomb, grad_lj, grad_coulomb."""
        g_lj = torch.zeros_like(pos)
        g_c = torch.zeros_like(pos)
        e_lj = torch.zeros((), dtype=torch.float64, device=pos.device)
        e_c = torch.zeros((), dtype=torch.float64, device=pos.device)
        for a in range(0, len(i), self.chunk):
            ii, jj = i[a:a + self.chunk], j[a:a + self.chunk]
            v_lj, f_lj, v_c, f_c, d = self._pair_kernel(pos, box, ii, jj)
            e_lj = e_lj + v_lj.sum(dtype=torch.float64)
            gvec = f_lj.unsqueeze(-1) * d        # force on j; the gradient is its negative
            g_lj.index_add_(0, ii, gvec).index_add_(0, jj, -gvec)
            if self.has_charges:
                e_c = e_c + v_c.sum(dtype=torch.float64)
                gvec = f_c.unsqueeze(-1) * d
                g_c.index_add_(0, ii, gvec).index_add_(0, jj, -gvec)
        return e_lj.to(pos.dtype), e_c.to(pos.dtype), g_lj, g_c

    def _nonbonded_frame(self, pos, box, pairs=None):
        i, j = self.pairs(pos, box) if pairs is None else pairs
        return self.pair_terms(pos, box, i, j)

    def _rf_exclusion_terms(self, x, box):
        """Reaction-field correction of excluded pairs within the cut-off plus the self term, as
        GROMACS' Verlet kernels add them to Coulomb (SR)."""
        q = self.charges
        self_term = -0.5 * self.f_elec * self.c_rf * (q * q).sum()
        if len(self.excl) == 0:
            return self_term.expand(x.shape[0])
        i, j = self.excl[:, 0], self.excl[:, 1]
        d = minimum_image(x[:, j] - x[:, i], box)
        r2 = (d * d).sum(-1)
        qq = q[i] * q[j] * self.f_elec
        v = qq * (self.k_rf * r2 - self.c_rf)
        v = torch.where(r2 < self.settings.rcoulomb ** 2, v, torch.zeros_like(v))
        return v.sum(-1) + self_term

    def bonded_terms(self, x: torch.Tensor, box: torch.Tensor) -> dict:
        """Bonded energies and 1-4 pairs {key: (B,)} of positions x (B, N, 3), box (B, 3, 3)."""
        nb = x.shape[0]
        zero = x.new_zeros(nb)
        out = {k: zero for k in ("bond", "angle", "proper", "improper", "lj_14")}
        key_of = {"bonds": "bond", "angles": "angle"}
        for kind, func, name in self.terms:
            idx, par = getattr(self, f"{name}_idx"), getattr(self, f"{name}_par")
            if kind == "pairs":
                for k, v in self._pairs14(x, box, idx, par).items():
                    out[k] = out.get(k, zero) + v
                continue
            if kind == "dihedrals":
                key = "proper" if func in (1, 3, 9) else "improper"
            else:
                key = key_of[kind]
            out[key] = out[key] + self._bonded(x, box, kind, func, idx, par).sum(-1)
        if self.has_charges and "coulomb_14" not in out:
            out["coulomb_14"] = zero
        return out

    # ------------------------------------------------------------------ bonded forces (one frame)
    # vectors of each term kind: (a, b) is x[idx[:, a]] - x[idx[:, b]] (the conventions of ``functional``)
    _VECTORS = {"bonds": ((1, 0),), "pairs": ((1, 0),), "angles": ((0, 1), (2, 1)),
                "dihedrals": ((0, 1), (2, 1), (2, 3))}

    def _raw_vectors(self, x, name, kind):
        idx = getattr(self, f"{name}_idx")
        return [x.index_select(0, idx[:, a]) - x.index_select(0, idx[:, b]) for a, b in self._VECTORS[kind]]

    def bonded_images(self, x: torch.Tensor, box: torch.Tensor) -> dict:
        """{term: [shift (m, 3) per vector]} making the raw differences of positions x (N, 3) their minimum
        images in box (3, 3); valid while no bonded vector changes its image (a run of dynamics: bonded
        vectors stay far below half the box height), which saves the reduction per step."""
        out = {}
        for kind, _, name in self.terms:
            out[name] = [minimum_image_fractional(v, box) - v for v in self._raw_vectors(x, name, kind)]
        return out

    def bonded_forces(self, x: torch.Tensor, box: torch.Tensor, images: dict | None = None) -> tuple:
        """Analytic bonded and 1-4 forces of one frame: positions x (N, 3), box (3, 3) -> ({key: energy
        scalar} as ``bonded_terms``, forces (N, 3)). ``images``: ``bonded_images`` of these positions' run
        (else every vector is reduced to its minimum image)."""
        f = torch.zeros_like(x)
        zero = x.new_zeros(())
        out = {k: zero for k in ("bond", "angle", "proper", "improper", "lj_14")}
        if self.has_charges:
            out["coulomb_14"] = zero
        for kind, func, name in self.terms:
            idx, par = getattr(self, f"{name}_idx"), getattr(self, f"{name}_par")
            vec = self._raw_vectors(x, name, kind)
            if images is not None:
                vec = [v + s for v, s in zip(vec, images[name])]
            else:
                vec = [minimum_image_fractional(v, box) for v in vec]
            if kind == "bonds" or kind == "pairs":
                if kind == "bonds":
                    e, fj = F.bond_force(vec[0], par[:, 0], par[:, 1], g96=func == 2)
                    out["bond"] = out["bond"] + e.sum()
                else:
                    qq = None
                    if self.has_charges:
                        qq = (self.charges[idx[:, 0]] * self.charges[idx[:, 1]]
                              * (self.f_elec * self.defaults.fudge_qq))
                    e, e_c, fj = F.pair14_force(vec[0], par[:, 0], par[:, 1], qq)
                    out["lj_14"] = out["lj_14"] + e.sum()
                    if e_c is not None:
                        out["coulomb_14"] = out["coulomb_14"] + e_c.sum()
                fa = torch.stack([-fj, fj], dim=1)
            elif kind == "angles":
                e, fi, fk = F.angle_force(vec[0], vec[1], par[:, 0], par[:, 1], g96=func == 2)
                out["angle"] = out["angle"] + e.sum()
                fa = torch.stack([fi, -fi - fk, fk], dim=1)
            else:
                if func in (1, 4, 9):
                    def pot(phi, par=par):
                        return F.periodic_dihedral_dphi(phi, par[:, 0], par[:, 1], par[:, 2])
                elif func == 2:
                    def pot(phi, par=par):
                        return F.harmonic_improper_dphi(phi, par[:, 0], par[:, 1])
                else:
                    def pot(phi, par=par):
                        return F.ryckaert_bellemans_dphi(phi, par[:, :6])
                e, fa = F.dihedral_force(vec[0], vec[1], vec[2], pot)
                key = "proper" if func in (1, 3, 9) else "improper"
                out[key] = out[key] + e.sum()
            f.index_add_(0, idx.reshape(-1), fa.reshape(-1, 3))
        return out, f

    # ------------------------------------------------------------------ forward
    def _as_frame(self, positions, box):
        x = torch.as_tensor(positions, dtype=self.dtype, device=self.type_index.device)
        b = torch.as_tensor(box, dtype=self.dtype, device=x.device)
        return x, b

    def forward(self, positions: torch.Tensor, box: torch.Tensor, pairs=None) -> dict:
        """positions (B, N, 3) nm, box (B, 3, 3) nm (rows a, b, c) -> {term: energies (B,) kJ/mol}.
        ``pairs``: the non-excluded short-range pairs (i, j) of a single frame (B = 1), if already at
        hand (``pairs``); else they are searched per frame."""
        if positions.dim() == 2:
            positions = positions.unsqueeze(0)
        if box.dim() == 2:
            box = box.unsqueeze(0).expand(positions.shape[0], 3, 3)
        if positions.shape[1] != self.n_atoms or positions.shape[-1] != 3:
            raise ValueError(f"positions must be (B, {self.n_atoms}, 3), got {tuple(positions.shape)}")
        if pairs is not None and positions.shape[0] != 1:
            raise ValueError("pairs can be given for one frame only")
        x = positions.to(self.dtype)
        box = box.to(self.dtype)
        nb = x.shape[0]
        out = self.bonded_terms(x, box)
        lj, coul = [], []
        for b in range(nb):
            e_lj, e_c = _Nonbonded.apply(x[b], box[b], self, pairs)
            lj.append(e_lj)
            coul.append(e_c)
        out["lj_sr"] = torch.stack(lj)
        if self.has_charges:
            out["coulomb_sr"] = torch.stack(coul) + self._rf_exclusion_terms(x, box)
        return out

    @torch.no_grad()
    def energies(self, positions, box, pairs=None, pair_energies=None) -> dict:
        """{term: kJ/mol} of one frame (positions (N, 3), box (3, 3); numpy or tensors), energies only (no
        forces). ``pairs``: the non-excluded short-range pairs (i, j) if at hand (``pairs``);
        ``pair_energies``: their (LJ, Coulomb) energies per pair if at hand (``pair_energies``)."""
        x, b = self._as_frame(positions, box)
        out = self.bonded_terms(x[None], b[None])
        if pair_energies is None:
            i, j = self.pairs(x, b) if pairs is None else pairs
            pair_energies = self.pair_energies(x, b, i, j)
        lj, coul = pair_energies
        out["lj_sr"] = lj.sum(dtype=torch.float64)[None]
        if self.has_charges:
            out["coulomb_sr"] = coul.sum(dtype=torch.float64)[None] + self._rf_exclusion_terms(x[None], b[None])
        return {k: float(v[0]) for k, v in out.items()}


def total(energies: dict) -> torch.Tensor:
    """Sum of all terms (B,)."""
    return sum(energies.values())
