"""Energy kernels in GROMACS' functional forms (manual section "Bonded interactions").

Pure functions of geometric values and parameters in GROMACS file units (nm, kJ/mol, degrees for the
equilibrium angles and phases; force constants per rad^2), broadcasting over any shape, so that the
force field and the training prior share them. Angles passed in are radians. Energies in kJ/mol.
"""
from __future__ import annotations

import math

import torch

DEG = math.pi / 180.0


def harmonic_bond(r, b0, kb):
    """Bond func 1: 1/2 kb (r - b0)^2."""
    return 0.5 * kb * (r - b0) ** 2


def g96_bond(r, b0, kb):
    """Bond func 2 (GROMOS-96): 1/4 kb (r^2 - b0^2)^2."""
    return 0.25 * kb * (r * r - b0 * b0) ** 2


def harmonic_angle(theta, theta0_deg, k):
    """Angle func 1: 1/2 k (theta - theta0)^2, theta in radians, theta0 in degrees."""
    return 0.5 * k * (theta - theta0_deg * DEG) ** 2


def g96_angle(cos_theta, theta0_deg, k):
    """Angle func 2 (GROMOS-96 cosine): 1/2 k (cos theta - cos theta0)^2."""
    return 0.5 * k * (cos_theta - torch.cos(torch.as_tensor(theta0_deg * DEG, dtype=cos_theta.dtype))) ** 2


def periodic_dihedral(phi, phi_s_deg, k, multiplicity):
    """Dihedral func 1, 9 (proper) and 4 (periodic improper): k (1 + cos(n phi - phi_s)).
    The multiplicity n comes from the topology (never assumed)."""
    return k * (1.0 + torch.cos(multiplicity * phi - phi_s_deg * DEG))


def wrap_angle(dphi):
    """Map an angle difference into [-pi, pi) as GROMACS' make_dp_periodic."""
    return dphi - 2.0 * math.pi * torch.floor((dphi + math.pi) / (2.0 * math.pi))


def harmonic_improper(xi, xi0_deg, k):
    """Dihedral func 2: 1/2 k (xi - xi0)^2 with the difference wrapped into [-pi, pi)."""
    return 0.5 * k * wrap_angle(xi - xi0_deg * DEG) ** 2


def ryckaert_bellemans(phi, c):
    """Dihedral func 3: sum_n C_n cos^n(psi), psi = phi - 180 deg; c (..., 6)."""
    cpsi = -torch.cos(phi)
    out = c[..., 5]
    for n in (4, 3, 2, 1, 0):   # Horner
        out = out * cpsi + c[..., n]
    return out


def lennard_jones(r2, c6, c12, cutoff=None, shift=True):
    """LJ c12/r^12 - c6/r^6 from squared distances; with a cutoff, ``lj_pair``'s energy (shifted to zero
    at the cut-off when ``shift``, nothing beyond it)."""
    if cutoff is not None:
        return lj_pair(r2, c6, c12, cutoff, shift)[0]
    inv6 = 1.0 / (r2 * r2 * r2)
    return (c12 * inv6 - c6) * inv6


def reaction_field_constants(cutoff: float, epsilon_rf: float, epsilon_r: float = 1.0) -> tuple:
    """(k_rf, c_rf) as GROMACS: epsilon_rf = 0 means infinity; c_rf makes the potential 0 at rc."""
    if epsilon_rf == 0:
        k_rf = 1.0 / (2.0 * cutoff ** 3)
    else:
        k_rf = (epsilon_rf - epsilon_r) / (2.0 * epsilon_rf + epsilon_r) / cutoff ** 3
    return k_rf, 1.0 / cutoff + k_rf * cutoff ** 2


def lj_pair(r2, c6, c12, cutoff: float, shift: bool = True) -> tuple:
    """Short-range Lennard-Jones of pairs at squared distances r2 (nm^2), GROMACS' Verlet kernel: plain
    cut-off, potential shifted to zero at the cut-off when ``shift`` (vdw-modifier potential-shift; the
    forces are not shifted). Returns (energy kJ/mol, fscal) with fscal = -dV/dr / r, so that the force on
    j is fscal * (x_j - x_i). Pairs at or beyond the cut-off contribute nothing."""
    inv2 = 1.0 / r2
    inv6 = inv2 * inv2 * inv2
    v = (c12 * inv6 - c6) * inv6
    if shift:
        rc6 = 1.0 / cutoff ** 6
        v = v - (c12 * rc6 - c6) * rc6
    fscal = (12.0 * c12 * inv6 - 6.0 * c6) * inv6 * inv2
    inside = r2 < cutoff * cutoff
    zero = torch.zeros_like(v)
    return torch.where(inside, v, zero), torch.where(inside, fscal, zero)


def reaction_field_pair(r2, qq_f, cutoff: float, k_rf: float, c_rf: float) -> tuple:
    """Reaction-field Coulomb f q_i q_j (1/r + k_rf r^2 - c_rf) of non-excluded pairs within the cut-off
    (qq_f includes 1/(4 pi eps0 eps_r)). Returns (energy kJ/mol, fscal = -dV/dr / r)."""
    inv_r = torch.rsqrt(r2)
    v = qq_f * (inv_r + k_rf * r2 - c_rf)
    fscal = qq_f * (inv_r * inv_r * inv_r - 2.0 * k_rf)
    inside = r2 < cutoff * cutoff
    zero = torch.zeros_like(v)
    return torch.where(inside, v, zero), torch.where(inside, fscal, zero)


def reaction_field_excluded(r2, qq_f, cutoff: float, k_rf: float, c_rf: float):
    """GROMACS' (Verlet scheme) reaction-field correction f q_i q_j (k_rf r^2 - c_rf) for an excluded
    pair within the cut-off."""
    v = qq_f * (k_rf * r2 - c_rf)
    return torch.where(r2 < cutoff * cutoff, v, torch.zeros_like(v))


def coulomb(r, qq_f):
    """Plain Coulomb f q_i q_j / r (1-4 pairs)."""
    return qq_f / r


# ----------------------------------------------------------------------------- energies with forces
# The same functional forms from the vectors between the atoms, each returning the energies and the
# forces on the atoms (the thermalisation's hot loop: measured on a 5832-atom sPS frame, autograd of the
# bonded terms cost several times the analytic forces). Vectors follow ``geometry``: bonds d = x_j - x_i,
# angles r_ji = x_i - x_j and r_jk = x_k - x_j, dihedrals r_ij = x_i - x_j, r_kj = x_k - x_j,
# r_kl = x_k - x_l.

def _dot(a, b):
    return (a * b).sum(-1)


def bond_force(d, b0, kb, g96: bool = False) -> tuple:
    """Bond func 1 (``harmonic_bond``) or 2 (``g96_bond``): (energy (m,), force on j (m, 3)); the force
    on i is its negative."""
    if g96:
        r2 = _dot(d, d)
        diff = r2 - b0 * b0
        return 0.25 * kb * diff * diff, (-kb * diff).unsqueeze(-1) * d
    r = torch.linalg.vector_norm(d, dim=-1)
    dr = r - b0
    return 0.5 * kb * dr * dr, (-kb * dr / r).unsqueeze(-1) * d


def angle_force(r_ji, r_jk, theta0_deg, k, g96: bool = False) -> tuple:
    """Angle func 1 (``harmonic_angle``, theta from atan2 as ``geometry.angle``) or 2 (``g96_angle``):
    (energy (m,), force on i, force on k); the force on j is minus their sum."""
    a2, b2, dot = _dot(r_ji, r_ji), _dot(r_jk, r_jk), _dot(r_ji, r_jk)
    if g96:
        inv_ab = torch.rsqrt(a2 * b2)
        cos = dot * inv_ab
        diff = cos - torch.cos(theta0_deg * DEG)
        g = k * diff                                   # dE/dcos
        f_i = -g.unsqueeze(-1) * (r_jk * inv_ab.unsqueeze(-1) - (cos / a2).unsqueeze(-1) * r_ji)
        f_k = -g.unsqueeze(-1) * (r_ji * inv_ab.unsqueeze(-1) - (cos / b2).unsqueeze(-1) * r_jk)
        return 0.5 * k * diff * diff, f_i, f_k
    cn = torch.linalg.vector_norm(torch.cross(r_ji, r_jk, dim=-1), dim=-1)
    diff = torch.atan2(cn, dot) - theta0_deg * DEG
    # -dE/dtheta dtheta/dr: dtheta/dr_ji = (r_ji (r_ji.r_jk) - r_jk |r_ji|^2) / (|r_ji|^2 |r_ji x r_jk|)
    g = (k * diff / cn.clamp_min(1e-12)).unsqueeze(-1)
    f_i = g * (r_jk - (dot / a2).unsqueeze(-1) * r_ji)
    f_k = g * (r_ji - (dot / b2).unsqueeze(-1) * r_jk)
    return 0.5 * k * diff * diff, f_i, f_k


def periodic_dihedral_dphi(phi, phi_s_deg, k, multiplicity) -> tuple:
    """``periodic_dihedral`` and its derivative dV/dphi."""
    arg = multiplicity * phi - phi_s_deg * DEG
    return k * (1.0 + torch.cos(arg)), -k * multiplicity * torch.sin(arg)


def harmonic_improper_dphi(xi, xi0_deg, k) -> tuple:
    """``harmonic_improper`` and its derivative dV/dxi."""
    dp = wrap_angle(xi - xi0_deg * DEG)
    return 0.5 * k * dp * dp, k * dp


def ryckaert_bellemans_dphi(phi, c) -> tuple:
    """``ryckaert_bellemans`` and its derivative dV/dphi (dcos(psi)/dphi = sin(phi))."""
    cpsi = -torch.cos(phi)
    e = c[..., 5]
    de = 5.0 * c[..., 5]
    for n in (4, 3, 2, 1, 0):   # Horner for V and dV/dcos(psi)
        e = e * cpsi + c[..., n]
        if n:
            de = de * cpsi + n * c[..., n]
    return e, de * torch.sin(phi)


def dihedral_force(r_ij, r_kj, r_kl, potential) -> tuple:
    """Energy and forces of a dihedral term from its three vectors; ``potential(phi) -> (V, dV/dphi)``
    with phi as ``geometry.dihedral``. Forces as GROMACS' do_dih_fup: returns (energy (m,), forces
    (m, 4, 3) on i, j, k, l)."""
    m = torch.cross(r_ij, r_kj, dim=-1)
    n = torch.cross(r_kj, r_kl, dim=-1)
    nrkj2 = _dot(r_kj, r_kj)
    nrkj = torch.sqrt(nrkj2)
    phi = torch.atan2(nrkj * _dot(m, r_kl), _dot(m, n))
    e, ddphi = potential(phi)
    f_i = (-ddphi * nrkj / _dot(m, m).clamp_min(1e-24)).unsqueeze(-1) * m
    f_l = (ddphi * nrkj / _dot(n, n).clamp_min(1e-24)).unsqueeze(-1) * n
    p = (_dot(r_ij, r_kj) / nrkj2).unsqueeze(-1)
    q = (_dot(r_kl, r_kj) / nrkj2).unsqueeze(-1)
    s = p * f_i - q * f_l
    return e, torch.stack([f_i, s - f_i, -f_l - s, f_l], dim=1)


def pair14_force(d, c6, c12, qq_f=None) -> tuple:
    """1-4 pair (plain LJ, and Coulomb with ``qq_f``) from d = x_j - x_i: (LJ energy, Coulomb energy or
    None, force on j)."""
    inv2 = 1.0 / _dot(d, d)
    inv6 = inv2 * inv2 * inv2
    e_lj = (c12 * inv6 - c6) * inv6
    fscal = (12.0 * c12 * inv6 - 6.0 * c6) * inv6 * inv2
    e_c = None
    if qq_f is not None:
        inv_r = torch.sqrt(inv2)
        e_c = qq_f * inv_r
        fscal = fscal + e_c * inv2
    return e_lj, e_c, fscal.unsqueeze(-1) * d
