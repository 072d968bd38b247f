"""Repeat-unit mappings: one file describes the beads of a monomer (and its variants, such as the chain
ends) and maps every matching monomer of every moleculetype, whatever the chain length
(``docs/MAPPING_FORMAT.md``)::

    [ unit ]     NAME [RESNAME ...]         a unit; the sections below belong to it
    [ atoms ]    name  type  bead           every atom of the unit, the bead (label) that generates it
    [ bonds ]    atom  atom                 bonds inside the unit; ``+name`` / ``-name`` is an atom of the
                                            next / previous unit: a link to a neighbouring unit
    [ beads ]    label type [align] [name]  bead order, type, fixpoint (``-BB``: the previous unit's BB),
                                            output name (``{n}``: the unit's number in its molecule)
    [ centre ]   bead  atom  [factor]       bead position = sum(factor * mass * r) / sum(factor * mass);
                                            atoms of neighbouring units as ``-name`` / ``+name``
    [ mult ]     bead  multiples

A moleculetype is cut into units in one of two ways. Where its residues carry a unit's residue name and
exactly its atom names (one residue per monomer), residue by residue. Otherwise by the molecule graph:
every placement of a unit's atoms (atom types, bonds inside the unit, and as many bonds leaving each
atom as it has links) is found by subgraph isomorphism, and the molecule is covered by placements that
do not overlap. Units are numbered in topology order (their lowest atom index); a ``+`` link must lead
to a later unit and a ``-`` link to an earlier one, and both sides must declare it. Among equivalent
placements of the same atoms (a ring flip, the hydrogens of a CH3) the one that maps the unit's atoms,
in file order, to the lowest atom indices is used, so that weights given to some of equivalent atoms
fall on the same atoms as in the topology's numbering.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
from networkx.algorithms import isomorphism

from ..errors import MappingError
from .lexer import read_sections, to_factor, to_int, want
from .model import Bead, MoleculeMapping, default_align

log = logging.getLogger(__name__)

SECTIONS = ("unit", "atoms", "bonds", "beads", "centre", "mult")
MAX_COVER_STEPS = 200_000   # backtracking budget when placements overlap


@dataclass
class UnitAtom:
    name: str
    type: str | None        # None: any type (formats without types)
    bead: str
    line: int


@dataclass
class UnitBead:
    label: str
    type: str
    align: tuple | None     # (sign '', '-' or '+', bead label)
    name: str | None        # output name or template with {n}
    mult: int
    line: int


@dataclass
class Unit:
    """One repeat unit (or a variant of one). ``bonds``: internal bonds as index pairs, None where the
    format has no bonds (backward files: residue matching only); ``links``: (atom index, sign, name of the
    atom in the neighbouring unit, line); ``centre``: {bead label: [(sign, atom name, factor, line)]};
    ``mass_weighted``: True: a centre weight is factor * the atom's topology mass; False: the factor
    itself (backward files, whose weights do not come from the topology)."""
    name: str
    resnames: tuple
    path: str
    line: int
    atoms: list = field(default_factory=list)
    bonds: list | None = None
    links: list = field(default_factory=list)
    beads: list = field(default_factory=list)
    centre: dict = field(default_factory=dict)
    mass_weighted: bool = True

    @property
    def where(self) -> str:
        return f"unit {self.name} ({self.path}:{self.line})"

    def atom_index(self, name: str) -> int | None:
        for k, a in enumerate(self.atoms):
            if a.name == name:
                return k
        return None

    def pattern(self) -> nx.Graph:
        """The unit as a graph: nodes with 'type' and 'deg' (internal bonds + links)."""
        g = nx.Graph()
        n_links = [0] * len(self.atoms)
        for k, _, _, _ in self.links:
            n_links[k] += 1
        for k, a in enumerate(self.atoms):
            g.add_node(k, type=a.type, deg=n_links[k])
        g.add_edges_from(self.bonds or ())
        for k in g.nodes:
            g.nodes[k]["deg"] += g.degree(k)
        return g


# ------------------------------------------------------------------------------------------- parsing
def read_units(path) -> list:
    """All units of a repeat-unit mapping file, checked for internal consistency."""
    path = Path(path)
    units: list = []
    unit = None
    current = None
    header_line = None     # line of a [ unit ] header still waiting for its name line
    raw = {}               # per unit: {section: [(lineno, fields)]}
    for section, lineno, f in read_sections(path, SECTIONS):
        if f is None:
            if header_line is not None:
                raise MappingError("[ unit ] needs a line 'NAME [RESNAME ...]' before the next section",
                                   path=path, line=header_line)
            current = section
            if section == "unit":
                header_line = lineno
                continue
            if unit is None:
                raise MappingError(f"section [{section}] before any [ unit ]; a repeat-unit file starts "
                                   "each unit with '[ unit ]' and its name", path=path, line=lineno)
            if section in raw[id(unit)]:
                raise MappingError(f"second [{section}] section in {unit.where}", path=path, line=lineno)
            raw[id(unit)][section] = []
            continue
        if current == "unit":
            if header_line is None:
                raise MappingError(f"[ unit ] takes one line, 'NAME [RESNAME ...]'; {unit.where} has another",
                                   path=path, line=lineno)
            header_line = None
            unit = Unit(name=f[0], resnames=tuple(f[1:]) or (f[0],), path=str(path), line=lineno)
            if any(u.name == unit.name for u in units):
                raise MappingError(f"unit {unit.name} is defined twice", path=path, line=lineno)
            units.append(unit)
            raw[id(unit)] = {}
            continue
        raw[id(unit)][current].append((lineno, f))
    if header_line is not None:
        raise MappingError("[ unit ] needs a line 'NAME [RESNAME ...]'", path=path, line=header_line)
    if not units:
        raise MappingError("no [ unit ] in this repeat-unit mapping file", path=path)
    for u in units:
        _build_unit(u, raw[id(u)], path)
    return units


def _split_ref(text: str) -> tuple:
    if text[:1] in "+-" and len(text) > 1:
        return text[0], text[1:]
    return "", text


def _build_unit(u: Unit, sec: dict, path: Path) -> None:
    if "atoms" not in sec or not sec["atoms"]:
        raise MappingError(f"{u.where} has no [ atoms ] lines ('name type bead')", path=path, line=u.line)
    for lineno, f in sec["atoms"]:
        want(f, (3, 3), "name type bead", path, lineno)
        if u.atom_index(f[0]) is not None:
            raise MappingError(f"atom {f[0]} appears twice in {u.where}", path=path, line=lineno)
        if f[0][:1] in "+-":
            raise MappingError(f"atom names may not start with '+' or '-' ({f[0]}): those mark atoms of "
                               "neighbouring units", path=path, line=lineno)
        u.atoms.append(UnitAtom(f[0], f[1], f[2], lineno))
    # beads: declared, or in order of first appearance with their label as type
    labels = list(dict.fromkeys(a.bead for a in u.atoms))
    if "beads" in sec:
        for lineno, f in sec["beads"]:
            want(f, (2, 4), "label type [align] [name]", path, lineno)
            if any(b.label == f[0] for b in u.beads):
                raise MappingError(f"bead {f[0]} appears twice in [ beads ] of {u.where}", path=path, line=lineno)
            align = None if len(f) < 3 or f[2] == "." else _split_ref(f[2])
            u.beads.append(UnitBead(f[0], f[1], align, f[3] if len(f) > 3 else None, 1, lineno))
        declared = {b.label for b in u.beads}
        for a in u.atoms:
            if a.bead not in declared:
                raise MappingError(f"atom {a.name} is in bead {a.bead}, which is not in [ beads ] of "
                                   f"{u.where}", path=path, line=a.line)
        for b in u.beads:
            if b.label not in labels:
                raise MappingError(f"bead {b.label} of {u.where} has no atoms", path=path, line=b.line)
    else:
        u.beads = [UnitBead(lab, lab, None, None, 1, u.line) for lab in labels]
    labels = {b.label for b in u.beads}
    for b in u.beads:
        if b.align is not None:
            sign, lab = b.align
            if not sign and lab not in labels:
                raise MappingError(f"bead {b.label} aligns to {lab}, which is not a bead of {u.where}",
                                   path=path, line=b.line)
            if not sign and lab == b.label:
                raise MappingError(f"bead {b.label} cannot align to itself", path=path, line=b.line)
    # bonds and links
    if "bonds" in sec:
        u.bonds = []
        seen = {}
        for lineno, f in sec["bonds"]:
            want(f, (2, 2), "atom atom", path, lineno)
            (s1, n1), (s2, n2) = _split_ref(f[0]), _split_ref(f[1])
            if s1 and s2:
                raise MappingError(f"bond {f[0]} {f[1]} joins two atoms outside {u.where}; one side must "
                                   "be an atom of the unit", path=path, line=lineno)
            if s1:
                (s1, n1), (s2, n2) = (s2, n2), (s1, n1)
            i = u.atom_index(n1)
            if i is None:
                raise MappingError(f"bond names atom {n1}, which is not in [ atoms ] of {u.where}",
                                   path=path, line=lineno)
            if s2:
                u.links.append((i, s2, n2, lineno))
                continue
            j = u.atom_index(n2)
            if j is None:
                raise MappingError(f"bond names atom {n2}, which is not in [ atoms ] of {u.where}",
                                   path=path, line=lineno)
            if i == j:
                raise MappingError(f"atom {n1} bonded to itself", path=path, line=lineno)
            key = (min(i, j), max(i, j))
            if key in seen:
                raise MappingError(f"bond {n1}-{n2} listed twice (also line {seen[key]})", path=path, line=lineno)
            seen[key] = lineno
            u.bonds.append(key)
    # centres
    for lineno, f in sec.get("centre", ()):
        want(f, (2, 3), "bead atom [mass-factor]", path, lineno)
        if f[0] not in labels:
            raise MappingError(f"[ centre ] names bead {f[0]}, which is not a bead of {u.where}", path=path,
                               line=lineno)
        sign, name = _split_ref(f[1])
        if not sign and u.atom_index(name) is None:
            raise MappingError(f"[ centre ] names atom {name}, which is not in [ atoms ] of {u.where} (atoms "
                               "of neighbouring units are written -NAME or +NAME)", path=path, line=lineno)
        entries = u.centre.setdefault(f[0], [])
        if any(e[0] == sign and e[1] == name for e in entries):
            raise MappingError(f"atom {f[1]} listed twice for bead {f[0]} in [ centre ]", path=path, line=lineno)
        entries.append((sign, name, to_factor(f[2], path, lineno) if len(f) == 3 else 1.0, lineno))
    for lineno, f in sec.get("mult", ()):
        want(f, (2, 2), "bead multiples", path, lineno)
        bead = next((b for b in u.beads if b.label == f[0]), None)
        if bead is None:
            raise MappingError(f"[ mult ] names bead {f[0]}, which is not a bead of {u.where}", path=path,
                               line=lineno)
        bead.mult = to_int(f[1], "a count", path, lineno)
        if bead.mult < 1:
            raise MappingError(f"multiples of bead {f[0]} must be >= 1, got {bead.mult}", path=path, line=lineno)


# ------------------------------------------------------------------------------------------- matching
@dataclass
class Placement:
    """A unit on the atoms ``atoms`` (molecule indices in the unit's atom order)."""
    unit: Unit
    atoms: tuple
    how: str


def _atom_label(mt, i: int) -> str:
    nd = mt.graph.nodes[i]
    src = nd.get("source")
    return f"atom {i + 1} ({nd['name']}, type {nd['type']}{', ' + src if src else ''})"


def _residues(mt) -> list:
    """Atoms grouped by (resid, resname), in order of first appearance: [(resid, resname, [atom indices])]
    (an atom listed after other residues, such as a chain-end hydrogen, still belongs to its residue)."""
    groups: dict = {}
    for i in range(mt.n_atoms):
        nd = mt.graph.nodes[i]
        groups.setdefault((nd["resid"], nd["resname"]), []).append(i)
    return [(resid, resname, atoms) for (resid, resname), atoms in groups.items()]


def _match_residues(mt, units) -> tuple:
    """(placements, None) when every residue is one unit by name, else (None, reason)."""
    g = mt.graph
    placements = []
    for resid, resname, atoms in _residues(mt):
        names = [g.nodes[i]["name"] for i in atoms]
        by_name = dict(zip(names, atoms))
        cands = [u for u in units if resname in u.resnames]
        if not cands:
            return None, f"residue {resname}{resid} is named like no unit"
        if len(by_name) != len(names):
            return None, f"residue {resname}{resid} has duplicate atom names"
        fits = [u for u in cands if {a.name for a in u.atoms} == set(names)]
        if not fits:
            u = cands[0]
            missing = sorted({a.name for a in u.atoms} - set(names))
            extra = sorted(set(names) - {a.name for a in u.atoms})
            return None, (f"residue {resname}{resid} (first atom {atoms[0] + 1}) has other atom names than "
                          f"{u.where}: missing {' '.join(missing) or '-'}, extra {' '.join(extra) or '-'}")
        # variants with the same names: the one whose links fit the bonds leaving the residue
        inside = set(atoms)

        def leaving(u, by_name=by_name, inside=inside):
            n = [0] * len(u.atoms)
            for k, _, _, _ in u.links:
                n[k] += 1
            return all(sum(1 for j in g[by_name[a.name]] if j not in inside) == n[k]
                       for k, a in enumerate(u.atoms)) if u.bonds is not None else True
        fits = [u for u in fits if leaving(u)] or fits
        u = fits[0]
        for a in u.atoms:
            if a.type is not None and g.nodes[by_name[a.name]]["type"] != a.type:
                return None, (f"{_atom_label(mt, by_name[a.name])} has type {g.nodes[by_name[a.name]]['type']}, "
                              f"{u.where} says {a.type} (line {a.line})")
        placements.append(Placement(u, tuple(by_name[a.name] for a in u.atoms), "residue"))
    return placements, None


def _candidates(mt, units) -> list:
    """Every placement of every unit with bonds (lowest-index representative per atom set)."""
    g = nx.Graph()
    for i in range(mt.n_atoms):
        g.add_node(i, type=mt.graph.nodes[i]["type"], deg=mt.graph.degree(i))
    g.add_edges_from(mt.graph.edges)
    out = []
    for u in units:
        if u.bonds is None:
            continue
        p = u.pattern()
        gm = isomorphism.GraphMatcher(g, p, node_match=lambda a, b: a["type"] == b["type"] and a["deg"] == b["deg"])
        best = {}
        for m in gm.subgraph_isomorphisms_iter():
            atoms = [0] * len(u.atoms)
            for gi, pk in m.items():
                atoms[pk] = gi
            atoms = tuple(atoms)
            key = frozenset(atoms)
            if key not in best or atoms < best[key]:
                best[key] = atoms
        out.extend(Placement(u, a, "graph") for a in sorted(best.values()))
    return out


def _link_problems(mt, placements) -> tuple:
    """Order the placements (lowest atom first) and check every bond between them against the links.
    Returns (ordered placements, prev, next, first problem or None); prev/next: {k: [unit numbers]}."""
    placements = sorted(placements, key=lambda p: min(p.atoms))
    owner = {}
    for k, p in enumerate(placements):
        for pos, a in enumerate(p.atoms):
            owner[a] = (k, pos)
    prev = {k: [] for k in range(len(placements))}
    nxt = {k: [] for k in range(len(placements))}
    g = mt.graph
    for k, p in enumerate(placements):
        u = p.unit
        declared = {}
        for pos, sign, target, line in u.links:
            declared.setdefault(pos, []).append((sign, target, line))
        for pos, a in enumerate(p.atoms):
            ext = [b for b in g[a] if owner[b][0] != k]
            links = list(declared.get(pos, ()))
            if u.bonds is None:     # residue units without bonds: any bond joins neighbours
                for b in ext:
                    (prev if owner[b][0] < k else nxt)[k].append(owner[b][0])
                continue
            if len(ext) != len(links):
                return placements, prev, nxt, (f"{_atom_label(mt, a)} has {len(ext)} bond(s) to other units, "
                                               f"{u.where} declares {len(links)} link(s) on {u.atoms[pos].name}")
            for b in ext:
                kb, posb = owner[b]
                other = placements[kb].unit
                sign = "+" if kb > k else "-"
                hit = next((x for x in links if x[0] == sign and x[1] == other.atoms[posb].name), None)
                if hit is None:
                    return placements, prev, nxt, (
                        f"{_atom_label(mt, a)} ({u.atoms[pos].name} of {u.where}) is bonded to "
                        f"{other.atoms[posb].name} of the {'next' if sign == '+' else 'previous'} unit "
                        f"({other.name}); the unit declares no link '{u.atoms[pos].name} "
                        f"{sign}{other.atoms[posb].name}'")
                links.remove(hit)
                (nxt if sign == "+" else prev)[k].append(kb)
    return placements, prev, nxt, None


def _cover(mt, cands) -> tuple:
    """Placements that cover every atom once and whose links agree: (placements, prev, next) or raise."""
    n = mt.n_atoms
    by_atom = [[] for _ in range(n)]
    for c in cands:
        for a in c.atoms:
            by_atom[a].append(c)
    uncovered = [a for a in range(n) if not by_atom[a]]
    if uncovered:
        return None, uncovered[0], None
    covered = np.zeros(n, dtype=bool)
    chosen = []
    stack = [iter(by_atom[0])]
    steps = 0
    first_problem = None
    while stack:
        steps += 1
        if steps > MAX_COVER_STEPS:
            break
        c = next(stack[-1], None)
        if c is None:
            stack.pop()
            if chosen:
                last = chosen.pop()
                covered[list(last.atoms)] = False
            continue
        if covered[list(c.atoms)].any():
            continue
        chosen.append(c)
        covered[list(c.atoms)] = True
        rest = np.flatnonzero(~covered)
        if len(rest) == 0:
            ordered, prev, nxt, problem = _link_problems(mt, chosen)
            if problem is None:
                return (ordered, prev, nxt), None, None
            first_problem = first_problem or problem
            chosen.pop()
            covered[list(c.atoms)] = False
            continue
        stack.append(iter(by_atom[int(rest[0])]))
    return None, None, first_problem or "no placement of the units covers every atom exactly once"


def match_molecule(mt, units, files: str) -> tuple:
    """Cut moleculetype ``mt`` into ``units``: (placements in order, prev, next, how)."""
    residue_reason = None
    if any(resname in u.resnames for u in units for _, resname, _ in _residues(mt)):
        placements, residue_reason = _match_residues(mt, units)
        if placements is not None:
            ordered, prev, nxt, problem = _link_problems(mt, placements)
            if problem is None:
                return ordered, prev, nxt, "residue"
            residue_reason = problem
    if not any(u.bonds is not None for u in units):
        raise MappingError(f"moleculetype {mt.name}: {residue_reason or 'its residue names match no unit'} "
                           "(these mapping files match residues by name and atom names only)", path=files)
    cands = _candidates(mt, units)
    found, uncovered, problem = _cover(mt, cands)
    if found is None:
        if uncovered is not None:
            problem = (f"{_atom_label(mt, uncovered)} is in no placement of any unit (no unit has an atom of "
                       f"this type with these bonds; units: {', '.join(u.name for u in units)})")
        more = f"; by residue names: {residue_reason}" if residue_reason else ""
        raise MappingError(f"moleculetype {mt.name} cannot be cut into the units of these mapping files: "
                           f"{problem}{more}", path=files)
    ordered, prev, nxt = found
    if residue_reason:
        log.info("moleculetype %s: not matched by residue (%s); matched by its bond graph", mt.name, residue_reason)
    return ordered, prev, nxt, "graph"


# ------------------------------------------------------------------------------------------- expansion
def _resolve(mt, placements, k, neighbours, sign, name, what, line_path) -> int:
    """Molecule index of atom ``name`` of the unit on the ``sign`` side of unit ``k``."""
    p = placements[k]
    if not sign:
        return p.atoms[p.unit.atom_index(name)]
    hits = {placements[j].atoms[placements[j].unit.atom_index(name)] for j in neighbours[k]
            if placements[j].unit.atom_index(name) is not None}
    side = "previous" if sign == "-" else "next"
    if len(hits) != 1:
        first = _atom_label(mt, min(p.atoms))
        reason = (f"it has no {side} unit" if not neighbours[k] else
                  f"its {side} unit has no atom {name}" if not hits else f"several {side} units have atom {name}")
        raise MappingError(f"moleculetype {mt.name}: {what} {sign}{name} of unit {p.unit.name} "
                           f"(starting at {first}), but {reason}", path=line_path[0], line=line_path[1])
    return hits.pop()


def expand(mt, placements, prev, nxt, files: str) -> MoleculeMapping:
    """The per-molecule mapping that the matched units give."""
    g = mt.graph
    masses = np.array([float(g.nodes[i]["mass"]) for i in range(mt.n_atoms)])
    beads = []
    bead_of = {}       # (unit number, label) -> bead index
    atom_bead = np.full(mt.n_atoms, -1, dtype=np.int64)
    for k, p in enumerate(placements):
        for b in p.unit.beads:
            idx = len(beads)
            bead_of[(k, b.label)] = idx
            atoms = tuple(sorted(p.atoms[pos] for pos, a in enumerate(p.unit.atoms) if a.bead == b.label))
            atom_bead[list(atoms)] = idx
            beads.append(Bead(index=idx, type=b.type, atoms=atoms, centre_atoms=np.zeros(0, dtype=np.int64),
                              centre_weights=np.zeros(0), mult=b.mult))
    type_count = {}
    for k, p in enumerate(placements):
        for b in p.unit.beads:
            bead = beads[bead_of[(k, b.label)]]
            entries = p.unit.centre.get(b.label)
            if entries:
                w = {}
                for sign, name, factor, line in entries:
                    a = _resolve(mt, placements, k, prev if sign == "-" else nxt, sign, name,
                                 f"bead {b.label}'s centre uses", (p.unit.path, line))
                    w[a] = w.get(a, 0.0) + factor * (masses[a] if p.unit.mass_weighted else 1.0)
                c_atoms = np.array(sorted(w), dtype=np.int64)
                weights = np.array([w[a] for a in c_atoms])
            else:
                c_atoms = np.asarray(bead.atoms, dtype=np.int64)
                weights = masses[c_atoms].copy() if p.unit.mass_weighted else np.ones(len(c_atoms))
            if not weights.sum() > 0:
                raise MappingError(f"bead {b.label} of {p.unit.where}: its centre atoms have zero total mass",
                                   path=p.unit.path, line=b.line)
            bead.centre_atoms, bead.centre_weights = c_atoms, weights / weights.sum()
            type_count[b.type] = type_count.get(b.type, 0) + 1
            bead.name = (b.name.replace("{n}", str(k + 1)).replace("{i}", str(bead.index + 1)) if b.name
                         else f"{b.type}{type_count[b.type]}")
            if b.align is not None:
                sign, lab = b.align
                if not sign:
                    bead.align = bead_of[(k, lab)]
                else:
                    side = prev if sign == "-" else nxt
                    hits = [bead_of[(j, lab)] for j in side[k] if (j, lab) in bead_of]
                    if len(set(hits)) != 1:
                        raise MappingError(
                            f"moleculetype {mt.name}: bead {b.label} of unit {p.unit.name} (starting at "
                            f"{_atom_label(mt, min(p.atoms))}) aligns to {sign}{lab}, but its "
                            f"{'previous' if sign == '-' else 'next'} unit has "
                            f"{'no' if not hits else 'more than one'} bead {lab}", path=p.unit.path, line=b.line)
                bead.align = hits[0] if sign else bead.align
                bead.align_explicit = True
    cg_bonds = sorted({(int(min(atom_bead[i], atom_bead[j])), int(max(atom_bead[i], atom_bead[j])))
                       for i, j in g.edges() if atom_bead[i] != atom_bead[j]})
    cg = nx.Graph()
    cg.add_nodes_from(range(len(beads)))
    cg.add_edges_from(cg_bonds)
    for bead in beads:
        if bead.align is None:
            bead.align = default_align(cg, bead.index)
        if len(bead.atoms) > 1 and not nx.is_connected(g.subgraph(bead.atoms)):
            log.warning("%s: moleculetype %s bead %d (%s): its atoms are not connected by bonds inside the bead",
                        files, mt.name, bead.index + 1, bead.name)
    units = [(p.unit.name, p.atoms, p.how) for p in placements]
    return MoleculeMapping(moltype=mt.name, n_atoms=mt.n_atoms, beads=beads, cg_bonds=cg_bonds, path=files,
                           units=units)


def map_molecule(mt, units, files: str) -> MoleculeMapping:
    placements, prev, nxt, how = match_molecule(mt, units, files)
    for p in placements:
        p.how = how
    return expand(mt, placements, prev, nxt, files)
