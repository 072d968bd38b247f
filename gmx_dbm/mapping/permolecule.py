"""deepBackmap's per-molecule mapping format plus gmx_dbm's extensions (``docs/MAPPING_FORMAT.md``):
one file maps one moleculetype by atom index.

- ``[map]``      ``atom-index atom-type bead-index bead-type`` (1-based), every atom exactly once;
- ``[align]``    ``bead fixpoint`` -- the bead whose direction is the local z axis;
- ``[mult]``     ``bead multiples``;
- ``[centre]``   ``bead atom [factor]`` -- the bead centre is the weighted mean of the listed atoms with
  weight ``factor * mass`` (factor defaults to 1); atoms of other beads may be listed. Beads without
  ``[centre]`` lines are centred on the centre of mass of their own atoms;
- ``[names]``    ``bead name`` -- CG atom names for output (default: bead type + running number per type);
- ``[molecule]`` ``NAME`` -- the moleculetype the file maps.

All indices inside Python are 0-based; files are 1-based.
"""
from __future__ import annotations

import logging
from pathlib import Path

import networkx as nx
import numpy as np

from ..errors import MappingError
from .lexer import read_sections, to_factor, to_int, want
from .model import Bead, MoleculeMapping, default_align

log = logging.getLogger(__name__)

SECTIONS = ("map", "align", "mult", "centre", "names", "molecule")


def read_molecule_mapping(path, moltype, lines=None) -> MoleculeMapping:
    """Read one .map file for ``moltype`` (a ``MoleculeType``) and check it against the topology."""
    path = Path(path)
    lines = list(read_sections(path, SECTIONS)) if lines is None else lines
    g = moltype.graph
    n = moltype.n_atoms
    atom_bead, bead_type, bead_line, atom_line = {}, {}, {}, {}
    align, mult, names, centre = {}, {}, {}, {}
    map_line = None
    for section, lineno, f in lines:
        if f is None:
            continue
        if section == "map":
            map_line = map_line or lineno
            want(f, (4, 4), "atom-index atom-type bead-index bead-type", path, lineno)
            atom = to_int(f[0], "an atom index", path, lineno)
            bead = to_int(f[2], "a bead index", path, lineno)
            if not 1 <= atom <= n:
                raise MappingError(f"atom {atom} is not in moleculetype {moltype.name} (atoms 1..{n})",
                                   path=path, line=lineno)
            if atom in atom_bead:
                raise MappingError(f"atom {atom} is mapped twice (also on line {atom_line[atom]}); every atom "
                                   "belongs to exactly one bead (list shared atoms in [centre])",
                                   path=path, line=lineno)
            topo_type = g.nodes[atom - 1]["type"]
            if f[1] != topo_type:
                raise MappingError(f"atom {atom} ({g.nodes[atom - 1]['name']}) has type {topo_type} in the "
                                   f"topology, the map says {f[1]}", path=path, line=lineno)
            if bead < 1:
                raise MappingError(f"bead index must be >= 1, got {bead}", path=path, line=lineno)
            if bead in bead_type and bead_type[bead] != f[3]:
                raise MappingError(f"bead {bead} has type {bead_type[bead]} (line {bead_line[bead]}), "
                                   f"here {f[3]}", path=path, line=lineno)
            bead_type.setdefault(bead, f[3])
            bead_line.setdefault(bead, lineno)
            atom_bead[atom] = bead
            atom_line[atom] = lineno
        elif section in ("align", "mult", "names"):
            want(f, (2, 2), {"align": "bead fixpoint", "mult": "bead multiples", "names": "bead name"}[section],
                  path, lineno)
            bead = to_int(f[0], "a bead index", path, lineno)
            store = {"align": align, "mult": mult, "names": names}[section]
            if bead in store:
                raise MappingError(f"bead {bead} appears twice in [{section}]", path=path, line=lineno)
            if section == "names":
                store[bead] = (f[1], lineno)
            else:
                store[bead] = (to_int(f[1], "a bead index" if section == "align" else "a count", path, lineno),
                               lineno)
        elif section == "centre":
            want(f, (2, 3), "bead atom [mass-factor]", path, lineno)
            bead = to_int(f[0], "a bead index", path, lineno)
            atom = to_int(f[1], "an atom index", path, lineno)
            if not 1 <= atom <= n:
                raise MappingError(f"atom {atom} is not in moleculetype {moltype.name} (atoms 1..{n})",
                                   path=path, line=lineno)
            factor = to_factor(f[2], path, lineno) if len(f) == 3 else 1.0
            entries = centre.setdefault(bead, {})
            if atom in entries:
                raise MappingError(f"atom {atom} listed twice for bead {bead} in [centre]", path=path,
                                   line=lineno)
            entries[atom] = (factor, lineno)
    # --- completeness
    if not atom_bead:
        raise MappingError("no [map] section (atom-index atom-type bead-index bead-type lines)", path=path)
    missing = [a for a in range(1, n + 1) if a not in atom_bead]
    if missing:
        shown = ", ".join(f"{a} ({g.nodes[a - 1]['name']})" for a in missing[:10])
        raise MappingError(f"{len(missing)} atom(s) of moleculetype {moltype.name} are in no bead: {shown}"
                           f"{' ...' if len(missing) > 10 else ''}", path=path, line=map_line)
    nb = max(bead_type)
    gaps = [b for b in range(1, nb + 1) if b not in bead_type]
    if gaps:
        raise MappingError(f"bead indices must run 1..{nb} without gaps; no atoms in bead(s) "
                           f"{', '.join(map(str, gaps[:10]))}", path=path, line=map_line)

    def check_bead(bead, lineno, what="bead"):
        if not 1 <= bead <= nb:
            raise MappingError(f"{what} {bead} does not exist (beads 1..{nb})", path=path, line=lineno)

    # --- CG bond graph: beads bonded when any of their atoms are bonded
    ab = np.array([atom_bead[a] - 1 for a in range(1, n + 1)])
    cg_bonds = sorted({(int(min(ab[i], ab[j])), int(max(ab[i], ab[j]))) for i, j in g.edges()
                       if ab[i] != ab[j]})
    cg = nx.Graph()
    cg.add_nodes_from(range(nb))
    cg.add_edges_from(cg_bonds)
    masses = np.array([float(g.nodes[i]["mass"]) for i in range(n)])
    beads = []
    type_count = {}
    for b in range(1, nb + 1):
        atoms = tuple(int(a) for a in np.flatnonzero(ab == b - 1))
        sub = g.subgraph(atoms)
        if len(atoms) > 1 and not nx.is_connected(sub):
            log.warning("%s: bead %d's atoms are not connected by bonds inside the bead", path, b)
        if b in centre:
            c_atoms = np.array(sorted(centre[b]), dtype=np.int64) - 1
            w = np.array([centre[b][a + 1][0] for a in c_atoms]) * masses[c_atoms]
            first_line = min(v[1] for v in centre[b].values())
        else:
            c_atoms = np.asarray(atoms, dtype=np.int64)
            w = masses[c_atoms].copy()
            first_line = bead_line[b]
        if not w.sum() > 0:
            raise MappingError(f"bead {b}'s centre atoms have zero total mass", path=path, line=first_line)
        type_count[bead_type[b]] = type_count.get(bead_type[b], 0) + 1
        name = names[b][0] if b in names else f"{bead_type[b]}{type_count[bead_type[b]]}"
        beads.append(Bead(index=b - 1, type=bead_type[b], atoms=atoms, centre_atoms=c_atoms,
                          centre_weights=w / w.sum(), mult=1, name=name))
    for b, entries in centre.items():
        if not 1 <= b <= nb:
            raise MappingError(f"bead {b} does not exist (beads 1..{nb})", path=path,
                               line=min(v[1] for v in entries.values()))
    for b, (name, lineno) in names.items():
        check_bead(b, lineno)
        if len(name) > 5:
            log.warning("%s:%d: bead name %r is longer than the 5 columns of .gro", path, lineno, name)
    for b, (m, lineno) in mult.items():
        check_bead(b, lineno)
        if m < 1:
            raise MappingError(f"multiples of bead {b} must be >= 1, got {m}", path=path, line=lineno)
        beads[b - 1].mult = m
    for b, (partner, lineno) in align.items():
        check_bead(b, lineno)
        check_bead(partner, lineno, what="align partner (fixpoint) bead")
        if partner == b:
            raise MappingError(f"bead {b} cannot align to itself", path=path, line=lineno)
        if not cg.has_edge(b - 1, partner - 1):
            log.warning("%s:%d: bead %d aligns to bead %d, which is not bonded to it in the CG bond graph",
                        path, lineno, b, partner)
        beads[b - 1].align = partner - 1
        beads[b - 1].align_explicit = True
    for bead in beads:
        if bead.align is None:
            bead.align = default_align(cg, bead.index)
    return MoleculeMapping(moltype=moltype.name, n_atoms=n, beads=beads, cg_bonds=cg_bonds, path=str(path))
