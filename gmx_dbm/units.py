"""GROMACS units and the single place where ParmEd's units are converted back.

gmx_dbm works in GROMACS units everywhere: nm, kJ/mol, ps, amu, e; angles in degrees in files and
radians inside torch code. ParmEd stores Amber units (Angstrom, kcal/mol) with the factor 1/2 of the
harmonic potentials folded into force constants and Lennard-Jones as (R_min/2, epsilon). Every value
taken from a ParmEd object goes through a function of this module, nothing else converts.
"""
from __future__ import annotations

import math

# CODATA 2018 values, as GROMACS 2022 (src/gromacs/math/units.h) defines them.
AVOGADRO = 6.02214076e23           # 1/mol
ELEMENTARY_CHARGE = 1.602176634e-19  # C
EPSILON0_SI = 8.8541878128e-12      # F/m
# 1/(4 pi eps0) in kJ mol^-1 nm e^-2 (= 138.935458): Coulomb energy prefactor.
ONE_4PI_EPS0 = (ELEMENTARY_CHARGE ** 2 * AVOGADRO / (4.0 * math.pi * EPSILON0_SI)) / 1e3 * 1e9

KCAL_TO_KJ = 4.184
KB = 0.00831446261815324         # Boltzmann constant, kJ/mol/K (GROMACS' BOLTZ)
ANGSTROM_TO_NM = 0.1
_TWO_1_6 = 2.0 ** (1.0 / 6.0)


def lj_columns_from_parmed_atomtype(rmin_half_angstrom: float, epsilon_kcal: float) -> tuple:
    """The two LJ columns of an [ atomtypes ] line as written in the file, from ParmEd's AtomType
    (``rmin`` = R_min/2 in Angstrom, ``epsilon`` in kcal/mol). ParmEd always reads the columns as
    sigma (nm) and epsilon (kJ/mol) and converts sigma -> R_min/2 = sigma * 2^(1/6) / 2 * 10; with
    comb-rule 1 the columns are really C6 and C12 and come back unchanged from this inverse."""
    sigma_nm = 2.0 * rmin_half_angstrom / _TWO_1_6 * ANGSTROM_TO_NM
    return sigma_nm, epsilon_kcal * KCAL_TO_KJ


def lj_columns_from_parmed_nbfix(rmin_angstrom: float, epsilon_kcal: float) -> tuple:
    """The two columns of a [ nonbond_params ] line from ParmEd's nbfix entry (R_min in Angstrom,
    epsilon in kcal/mol) — ParmEd stores (eps, sigma*10*2^(1/6))."""
    return rmin_angstrom / _TWO_1_6 * ANGSTROM_TO_NM, epsilon_kcal * KCAL_TO_KJ


def bond_from_parmed(req_angstrom: float, k_kcal_per_a2: float) -> tuple:
    """(b0 nm, kb kJ/mol/nm^2) from ParmEd's BondType (req A, k kcal/mol/A^2 with the 1/2 folded in)."""
    return req_angstrom * ANGSTROM_TO_NM, 2.0 * k_kcal_per_a2 * KCAL_TO_KJ / ANGSTROM_TO_NM ** 2


def angle_from_parmed(theteq_deg: float, k_kcal_per_rad2: float) -> tuple:
    """(theta0 deg, k kJ/mol/rad^2) from ParmEd's AngleType (k with the 1/2 folded in)."""
    return theteq_deg, 2.0 * k_kcal_per_rad2 * KCAL_TO_KJ


def dihedral_from_parmed(phase_deg: float, phi_k_kcal: float, per: float) -> tuple:
    """(phi_s deg, k kJ/mol, multiplicity) from ParmEd's DihedralType (no 1/2 here)."""
    return phase_deg, phi_k_kcal * KCAL_TO_KJ, per


def sigma_epsilon_to_c6_c12(sigma: float, epsilon: float) -> tuple:
    """C6 = 4 eps sigma^6, C12 = 4 eps sigma^12 (kJ/mol nm^6, kJ/mol nm^12)."""
    s6 = sigma ** 6
    return 4.0 * epsilon * s6, 4.0 * epsilon * s6 * s6


def c6_c12_to_sigma_epsilon(c6: float, c12: float) -> tuple:
    if c6 <= 0 or c12 <= 0:
        return 0.0, 0.0
    sigma = (c12 / c6) ** (1.0 / 6.0)
    return sigma, c6 * c6 / (4.0 * c12)
