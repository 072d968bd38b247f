"""Molecules as interaction graphs, and the system as flat index arrays for computation.

Everything here is in GROMACS units as written in topology files: nm, kJ/mol, degrees for angle
parameters, amu, e. No torch, no ParmEd (``gmx_dbm.topology.reader`` fills these classes).

Indices inside a ``MoleculeType`` are 0-based molecule-local atom indices; indices in ``FlatTopology``
are 0-based global atom indices in topology order (molecule instances as listed in ``[ molecules ]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

# Interaction kinds stored per molecule type. 'dihedrals' holds all dihedral funcs (1, 2, 3, 4, 9).
INTERACTION_KINDS = ("bonds", "angles", "dihedrals", "pairs")
# Dihedral funcs that GROMACS reports as "Improper Dih." (2) / "Proper Dih." (1, 9, 4 is "Periodic Improper
# Dih.") / "Ryckaert-Bell." (3); gmx_dbm's energy keys: proper = 1, 3, 9; improper = 2, 4.
PROPER_FUNCS = (1, 3, 9)
IMPROPER_FUNCS = (2, 4)


@dataclass(frozen=True)
class Interaction:
    """One bonded interaction: atoms (molecule-local, 0-based), GROMACS func, parameters as in the file
    (e.g. bond func 1: (b0 nm, kb kJ/mol/nm^2); angle func 1: (theta0 deg, k kJ/mol/rad^2);
    dihedral func 1/9: (phi_s deg, k kJ/mol, multiplicity); func 2: (xi0 deg, k kJ/mol/rad^2);
    func 3: (C0..C5 kJ/mol); pairs func 1: (c6, c12) always resolved to C6/C12 form)."""
    atoms: tuple
    func: int
    params: tuple


@dataclass(frozen=True)
class Defaults:
    """[ defaults ]."""
    nbfunc: int = 1
    comb_rule: int = 1
    gen_pairs: bool = False
    fudge_lj: float = 1.0
    fudge_qq: float = 1.0


@dataclass(frozen=True)
class AtomType:
    """[ atomtypes ] entry with LJ parameters resolved to C6 (kJ/mol nm^6) and C12 (kJ/mol nm^12)
    and, where the combination rule uses them, sigma (nm) / epsilon (kJ/mol)."""
    name: str
    mass: float
    charge: float
    c6: float
    c12: float
    sigma: float | None = None
    epsilon: float | None = None
    atomic_number: int | None = None   # the at.num column where the file gives it


class MoleculeType:
    """A [ moleculetype ]: ``graph`` has nodes 0..n-1 with attributes ``name``, ``type``, ``mass``,
    ``charge``, ``resid``, ``resname``, ``cgnr``; edges are the chemical bonds ([ bonds ] of any func,
    and [ settles ]/[ constraints ] func 1 if present). ``interactions[kind]`` lists ``Interaction``s
    for kind in INTERACTION_KINDS; ``exclusions`` holds the explicit [ exclusions ] pairs (i < j)."""

    def __init__(self, name: str, nrexcl: int, graph: nx.Graph, interactions: dict, exclusions=(),
                 source: str | None = None):
        self.name = name
        self.nrexcl = int(nrexcl)
        self.graph = graph
        self.interactions = {k: list(interactions.get(k, [])) for k in INTERACTION_KINDS}
        self.exclusions = {tuple(sorted(p)) for p in exclusions}
        self.source = source  # "path:line" of the [ moleculetype ] header, for error messages

    @property
    def n_atoms(self) -> int:
        return self.graph.number_of_nodes()

    def atom_attr(self, key: str) -> list:
        return [self.graph.nodes[i][key] for i in range(self.n_atoms)]

    def excluded_pairs(self) -> set:
        """All non-bonded exclusions: pairs within ``nrexcl`` bonds (GROMACS' rule) plus [ exclusions ]."""
        out = set(self.exclusions)
        if self.nrexcl > 0:
            lengths = dict(nx.all_pairs_shortest_path_length(self.graph, cutoff=self.nrexcl))
            for i, d in lengths.items():
                for j, n in d.items():
                    if i < j and n <= self.nrexcl:
                        out.add((i, j))
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in self.interactions.items())
        return f"<MoleculeType {self.name} atoms={self.n_atoms} nrexcl={self.nrexcl} {counts}>"


@dataclass
class System:
    """A whole GROMACS topology: force-field tables and molecule instances in [ molecules ] order."""
    defaults: Defaults
    atomtypes: dict                      # name -> AtomType
    moleculetypes: dict                  # name -> MoleculeType
    molecules: list                      # [(moleculetype name, count)]
    nonbond_params: dict = field(default_factory=dict)  # (type_a, type_b) sorted -> (c6, c12)
    name: str = ""
    path: str | None = None

    @property
    def n_atoms(self) -> int:
        return sum(self.moleculetypes[m].n_atoms * n for m, n in self.molecules)

    def instances(self):
        """Yield (moleculetype, first global atom index) for every molecule instance."""
        offset = 0
        for name, count in self.molecules:
            mt = self.moleculetypes[name]
            for _ in range(count):
                yield mt, offset
                offset += mt.n_atoms

    def lj_c6_c12(self, type_a: str, type_b: str) -> tuple:
        """C6, C12 for a type pair: [ nonbond_params ] first, else the [ defaults ] combination rule."""
        key = tuple(sorted((type_a, type_b)))
        if key in self.nonbond_params:
            return self.nonbond_params[key]
        a, b = self.atomtypes[type_a], self.atomtypes[type_b]
        if self.defaults.comb_rule == 1:
            return (float(np.sqrt(a.c6 * b.c6)), float(np.sqrt(a.c12 * b.c12)))
        if self.defaults.comb_rule == 2:
            sig = 0.5 * (a.sigma + b.sigma)
        else:
            sig = float(np.sqrt(a.sigma * b.sigma))
        eps = float(np.sqrt(a.epsilon * b.epsilon))
        return (4 * eps * sig ** 6, 4 * eps * sig ** 12)

    def flat(self) -> "FlatTopology":
        return FlatTopology.from_system(self)


@dataclass
class FlatTopology:
    """The system as numpy index/parameter arrays (global 0-based atom indices, topology order).

    bonded[kind][func] = (idx int64 (m, k), params float64 (m, p)) for kind in INTERACTION_KINDS;
    ``exclusions`` (m, 2) int64, i < j, sorted, includes nrexcl-derived pairs and explicit ones;
    ``lj_c6``/``lj_c12`` (ntypes, ntypes) for type indices ``type_index``.
    """
    names: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray
    types: np.ndarray
    type_names: list
    type_index: np.ndarray
    masses: np.ndarray
    charges: np.ndarray
    mol_index: np.ndarray          # molecule instance of each atom
    mol_type: list                 # moleculetype name of each instance
    bonded: dict
    exclusions: np.ndarray
    lj_c6: np.ndarray
    lj_c12: np.ndarray
    defaults: Defaults
    elements: np.ndarray = None    # element symbol per atom (``gmx_dbm.elements``: the one rule)

    def __post_init__(self):
        if self.elements is None:
            from ..elements import elements
            self.elements = elements(self.names, self.types, self.masses)

    @property
    def n_atoms(self) -> int:
        return len(self.names)

    def bond_list(self) -> tuple:
        """(idx int64 (m, 2), b0 float64 (m,) nm) of every bond, all funcs together."""
        funcs = self.bonded.get("bonds", {})
        if not funcs:
            return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
        return (np.concatenate([i for i, _ in funcs.values()]), np.concatenate([p[:, 0] for _, p in funcs.values()]))

    @property
    def is_heavy(self) -> np.ndarray:
        """(N,) bool: every atom that is not a hydrogen (by element, never by mass)."""
        return self.elements != "H"

    @classmethod
    def from_system(cls, system: System) -> "FlatTopology":
        names, resnames, resids, types, masses, charges, mol_index, mol_type = [], [], [], [], [], [], [], []
        bonded = {k: {} for k in INTERACTION_KINDS}
        excl = []
        resid_offset = 0
        for imol, (mt, off) in enumerate(system.instances()):
            g = mt.graph
            for i in range(mt.n_atoms):
                a = g.nodes[i]
                names.append(a["name"]); resnames.append(a["resname"]); types.append(a["type"])
                resids.append(int(a["resid"]) + resid_offset)
                masses.append(a["mass"]); charges.append(a["charge"]); mol_index.append(imol)
            resid_offset += max(int(g.nodes[i]["resid"]) for i in range(mt.n_atoms)) if mt.n_atoms else 0
            mol_type.append(mt.name)
            for kind in INTERACTION_KINDS:
                for inter in mt.interactions[kind]:
                    idx, par = bonded[kind].setdefault(inter.func, ([], []))
                    idx.append(tuple(a + off for a in inter.atoms))
                    par.append(tuple(inter.params))
            excl.extend((i + off, j + off) for i, j in mt.excluded_pairs())
        for kind in INTERACTION_KINDS:
            for func, (idx, par) in list(bonded[kind].items()):
                width = max(len(p) for p in par)
                pad = [tuple(p) + (0.0,) * (width - len(p)) for p in par]
                bonded[kind][func] = (np.asarray(idx, dtype=np.int64),
                                      np.asarray(pad, dtype=np.float64).reshape(len(idx), width))
        type_names = sorted(set(types))
        tindex = {t: k for k, t in enumerate(type_names)}
        nt = len(type_names)
        c6 = np.zeros((nt, nt)); c12 = np.zeros((nt, nt))
        for a in type_names:
            for b in type_names:
                c6[tindex[a], tindex[b]], c12[tindex[a], tindex[b]] = system.lj_c6_c12(a, b)
        exclusions = np.asarray(sorted(set(excl)), dtype=np.int64).reshape(-1, 2)
        from ..elements import elements
        znum = [getattr(system.atomtypes.get(t), "atomic_number", None) for t in types]
        elem = elements(names, types, masses, znum)
        return cls(np.asarray(names), np.asarray(resnames), np.asarray(resids, dtype=np.int64),
                   np.asarray(types), type_names, np.asarray([tindex[t] for t in types], dtype=np.int64),
                   np.asarray(masses, dtype=np.float64), np.asarray(charges, dtype=np.float64),
                   np.asarray(mol_index, dtype=np.int64), mol_type, bonded, exclusions, c6, c12,
                   system.defaults, elem)
