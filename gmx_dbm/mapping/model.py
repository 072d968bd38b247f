"""The mapping of a system: beads of each moleculetype (``MoleculeMapping``) and the whole system's flat
arrays (``FlatMapping``). Every mapping format (``permolecule``, ``units``, ``backward``) produces these."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np


@dataclass
class Bead:
    """One bead of a molecule type (indices molecule-local, 0-based).

    ``atoms``: the atoms this bead generates (each atom belongs to exactly one bead), ascending.
    ``centre_atoms``/``centre_weights``: the bead position is ``sum(w * r[centre_atoms])``; weights are
    normalised and may include atoms of neighbouring beads. ``align``: the fixpoint bead that defines the
    local z axis, resolved (the file's ``[align]`` or the default rule); None only for a bead without any
    CG-bonded neighbour and no ``[align]`` line. ``align_explicit`` says whether the file gave it."""
    index: int
    type: str
    atoms: tuple
    centre_atoms: np.ndarray
    centre_weights: np.ndarray
    align: int | None = None
    mult: int = 1
    name: str = ""
    align_explicit: bool = False


@dataclass
class MoleculeMapping:
    """The mapping of one moleculetype: ``beads`` in bead order, ``cg_bonds`` (bead pairs i < j that have
    a chemical bond between their atoms), ``path`` of the .map file. ``units``: where a repeat-unit or
    per-residue mapping made it, the matched units in order as ``(unit name, atom indices, how)`` with
    ``how`` 'residue' (residue and atom names) or 'graph' (atom types and bonds); None for a per-molecule
    file."""
    moltype: str
    n_atoms: int
    beads: list
    cg_bonds: list
    path: str | None = None
    units: list | None = None

    @property
    def n_beads(self) -> int:
        return len(self.beads)

    def atom_bead(self) -> np.ndarray:
        """(n_atoms,) bead index of each atom."""
        out = np.empty(self.n_atoms, dtype=np.int64)
        for b in self.beads:
            out[list(b.atoms)] = b.index
        return out

    def centre_matrix(self) -> np.ndarray:
        """(n_beads, n_atoms) dense matrix C with bead positions = C @ atom positions."""
        c = np.zeros((self.n_beads, self.n_atoms))
        for b in self.beads:
            c[b.index, b.centre_atoms] = b.centre_weights
        return c

    def cg_graph(self) -> nx.Graph:
        g = nx.Graph()
        g.add_nodes_from(range(self.n_beads))
        g.add_edges_from(self.cg_bonds)
        return g


@dataclass
class FlatMapping:
    """The whole system's mapping as global arrays (atoms in topology order; beads in molecule order,
    then bead order within the molecule).

    ``bead_types`` (n_beads,) str; ``bead_type_names`` sorted unique types; ``bead_type_index`` (n_beads,)
    index into ``bead_type_names``; ``bead_names``/``bead_resnames``/``bead_resids`` output labels;
    ``bead_mol`` molecule instance of each bead; ``bead_local`` bead index inside its molecule;
    ``atom_bead`` (n_atoms,) global bead generating each atom; ``centre`` scipy.sparse CSR
    (n_beads, n_atoms), rows sum to 1: bead positions = centre @ whole-molecule atom positions;
    ``align`` (n_beads,) global fixpoint bead index, -1 where a bead has none; ``mult`` (n_beads,);
    ``cg_bonds`` (m, 2) global bead pairs i < j."""
    bead_types: np.ndarray
    bead_type_names: list
    bead_type_index: np.ndarray
    bead_names: np.ndarray
    bead_resnames: np.ndarray
    bead_resids: np.ndarray
    bead_mol: np.ndarray
    bead_local: np.ndarray
    atom_bead: np.ndarray
    centre: object
    align: np.ndarray
    mult: np.ndarray
    cg_bonds: np.ndarray

    @property
    def n_beads(self) -> int:
        return len(self.bead_types)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_bead)

    def atom_info(self):
        """``AtomInfo`` labels for writing CG frames."""
        from ..io.frames import AtomInfo
        return AtomInfo(self.bead_names, self.bead_resnames, self.bead_resids)


@dataclass
class SystemMapping:
    """Mappings for every moleculetype of ``system`` (``molecules[name] -> MoleculeMapping``)."""
    system: object
    molecules: dict = field(default_factory=dict)

    def flat(self) -> FlatMapping:
        from scipy import sparse
        types, names, resnames, resids, mol, local, align, mult, bonds = ([] for _ in range(9))
        atom_bead = np.empty(self.system.n_atoms, dtype=np.int64)
        rows, cols, vals = [], [], []
        bead_off = 0
        resid_off = 0
        for imol, (mt, atom_off) in enumerate(self.system.instances()):
            mm = self.molecules[mt.name]
            g = mt.graph
            for b in mm.beads:
                first = g.nodes[b.atoms[0]]
                types.append(b.type)
                names.append(b.name)
                resnames.append(first["resname"])
                resids.append(int(first["resid"]) + resid_off)
                mol.append(imol)
                local.append(b.index)
                align.append(-1 if b.align is None else b.align + bead_off)
                mult.append(b.mult)
                atom_bead[np.asarray(b.atoms) + atom_off] = b.index + bead_off
                rows.extend([b.index + bead_off] * len(b.centre_atoms))
                cols.extend((b.centre_atoms + atom_off).tolist())
                vals.extend(b.centre_weights.tolist())
            bonds.extend((i + bead_off, j + bead_off) for i, j in mm.cg_bonds)
            bead_off += mm.n_beads
            resid_off += max(int(g.nodes[i]["resid"]) for i in range(mt.n_atoms)) if mt.n_atoms else 0
        type_names = sorted(set(types))
        tindex = {t: k for k, t in enumerate(type_names)}
        centre = sparse.csr_matrix((vals, (rows, cols)), shape=(bead_off, self.system.n_atoms))
        return FlatMapping(
            bead_types=np.asarray(types, dtype=str), bead_type_names=type_names,
            bead_type_index=np.asarray([tindex[t] for t in types], dtype=np.int64),
            bead_names=np.asarray(names, dtype=str), bead_resnames=np.asarray(resnames, dtype=str),
            bead_resids=np.asarray(resids, dtype=np.int64), bead_mol=np.asarray(mol, dtype=np.int64),
            bead_local=np.asarray(local, dtype=np.int64), atom_bead=atom_bead, centre=centre,
            align=np.asarray(align, dtype=np.int64), mult=np.asarray(mult, dtype=np.int64),
            cg_bonds=np.asarray(sorted(bonds), dtype=np.int64).reshape(-1, 2))


def default_align(cg: nx.Graph, bead: int) -> int | None:
    """Fixpoint when ``[align]`` gives none: the previous bead along the chain (the highest-numbered
    CG-bonded neighbour with a lower index); for the first bead, the neighbour with most CG bonds (the
    chain, not a side group), ties to the lowest index; None for an isolated bead."""
    nbrs = sorted(cg.neighbors(bead))
    if not nbrs:
        return None
    lower = [b for b in nbrs if b < bead]
    if lower:
        return lower[-1]
    return max(nbrs, key=lambda b: (cg.degree(b), -b))
