"""Chemical elements of atoms: one rule for every part of gmx_dbm (generation order, constraints,
stereocentres, restraints, RDFs, PDB element columns).

The element comes from the topology: the atomic number of the atom's [ atomtypes ] entry where the file
gives one (the ``at.num`` column), else the atom name and type, GROMACS-style ('CA' is a carbon, 'CL' and
'Cl' chlorine, 'BR' bromine). The mass decides only when neither name nor type starts with a known
element; hydrogen-mass repartitioning (hydrogens of 3-4 u) therefore never turns a hydrogen heavy.
No torch, no numpy beyond arrays of symbols.
"""
from __future__ import annotations

import numpy as np

SYMBOLS = ("H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
           "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br",
           "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te",
           "I")
MASSES = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "F": 18.998, "Na": 22.990, "Mg": 24.305,
          "Si": 28.086, "P": 30.974, "S": 32.06, "Cl": 35.45, "K": 39.098, "Ca": 40.078, "Br": 79.904,
          "I": 126.90}
# two-letter elements recognised from names (GROMACS writes them in capitals: CL, BR, NA, ...); only where
# the mass agrees, so that an aliphatic carbon called 'CL1' stays a carbon and, without a mass, 'CA' is a
# carbon as GROMACS names it
_TWO_LETTER = ("Cl", "Br", "Na", "Mg", "Si", "Ca")
_ONE_LETTER = ("H", "C", "N", "O", "F", "P", "S", "K", "I")
_UNITED_CARBON = (13.019, 14.027, 15.035, 16.043)  # CH, CH2, CH3, CH4 united atoms


def _letters(text) -> str:
    s = str(text).lstrip("0123456789")
    out = ""
    for ch in s:
        if not ch.isalpha():
            break
        out += ch
    return out


def _from_text(text, mass: float | None) -> str | None:
    lead = _letters(text)
    if not lead:
        return None
    for sym in _TWO_LETTER:
        if lead[:2].upper() == sym.upper() and mass is not None and abs(mass - MASSES[sym]) < 3.0:
            return sym
    if lead[0].upper() in _ONE_LETTER:
        return lead[0].upper()
    return None


def guess_element(name, atype=None, mass: float | None = None, atomic_number: int | None = None) -> str:
    """Element symbol of one atom (see the module doc for the order of the rules)."""
    if atomic_number is not None and 0 < int(atomic_number) <= len(SYMBOLS):
        return SYMBOLS[int(atomic_number) - 1]
    for text in (name, atype):
        if text is not None:
            sym = _from_text(text, mass)
            if sym is not None:
                return sym
    if mass is not None and mass > 0:
        if any(abs(mass - m) < 0.05 for m in _UNITED_CARBON):
            return "C"
        return min(MASSES, key=lambda e: abs(MASSES[e] - mass))
    return "X"


def elements(names, types=None, masses=None, atomic_numbers=None) -> np.ndarray:
    """Element symbols (n,) for parallel sequences of names, types, masses and atomic numbers (any may be
    None except names)."""
    n = len(names)
    types = [None] * n if types is None else types
    masses = [None] * n if masses is None else masses
    atomic_numbers = [None] * n if atomic_numbers is None else atomic_numbers
    return np.asarray([guess_element(a, t, None if m is None else float(m), z)
                       for a, t, m, z in zip(names, types, masses, atomic_numbers)], dtype="<U2")
