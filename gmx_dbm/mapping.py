"""Coarse-grained mappings: which atoms each bead generates, where bead centres are, local-frame axes.

Reads deepBackmap's ``.map`` format plus gmx_dbm's extensions (``docs/MAPPING_FORMAT.md``):

- ``[map]``      ``atom-index atom-type bead-index bead-type`` (1-based), every atom exactly once;
- ``[align]``    ``bead fixpoint`` -- the bead whose direction is the local z axis;
- ``[mult]``     ``bead multiples``;
- ``[centre]``   ``bead atom [factor]`` -- the bead centre is the weighted mean of the listed atoms with
  weight ``factor * mass`` (factor defaults to 1); atoms of other beads may be listed. Beads without
  ``[centre]`` lines are centred on the centre of mass of their own atoms;
- ``[names]``    ``bead name`` -- CG atom names for output (default: bead type + running number per type);
- ``[molecule]`` ``NAME`` -- the moleculetype the file maps.

Closing tags (``[/map]``) are accepted and ignored; ``;`` starts a comment; section headers may have spaces.
All indices inside Python are 0-based; files are 1-based.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from .errors import MappingError

log = logging.getLogger(__name__)

SECTIONS = ("map", "align", "mult", "centre", "names", "molecule")
_HEADER = re.compile(r"^\[\s*(/?)\s*([A-Za-z_]+)\s*\]$")


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
    a chemical bond between their atoms), ``path`` of the .map file."""
    moltype: str
    n_atoms: int
    beads: list
    cg_bonds: list
    path: str | None = None

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
        from .io.frames import AtomInfo
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


# ------------------------------------------------------------------------------------------- parsing
def _sections(path: Path):
    """Yield (section, lineno, fields) for every data line; checks section names."""
    section = None
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise MappingError(f"cannot read mapping file: {exc.strerror}", path=path) from None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            m = _HEADER.match(line)
            if not m:
                raise MappingError(f"malformed section header {line!r}; expected e.g. '[ map ]'",
                                   path=path, line=lineno)
            closing, name = m.group(1), m.group(2).lower()
            if name == "center":
                name = "centre"
            if name not in SECTIONS:
                raise MappingError(f"unknown section [{name}]; known: {', '.join(SECTIONS)}",
                                   path=path, line=lineno)
            section = None if closing else name
            continue
        if section is None:
            shown = line if len(line) <= 60 else line[:60] + "..."
            raise MappingError(f"data line {shown!r} outside a section; expected a '[ map ]' or other "
                               "section header first", path=path, line=lineno)
        yield section, lineno, line.split()


def _int(text, what, path, lineno) -> int:
    try:
        return int(text)
    except ValueError:
        raise MappingError(f"expected {what} (an integer), got {text!r}", path=path, line=lineno) from None


def _want(fields, n, form, path, lineno):
    if len(fields) < n[0] or len(fields) > n[1]:
        raise MappingError(f"expected '{form}', got {' '.join(fields)!r}", path=path, line=lineno)


def read_molecule_mapping(path, moltype, lines=None) -> MoleculeMapping:
    """Read one .map file for ``moltype`` (a ``MoleculeType``) and check it against the topology."""
    path = Path(path)
    lines = list(_sections(path)) if lines is None else lines
    g = moltype.graph
    n = moltype.n_atoms
    atom_bead, bead_type, bead_line, atom_line = {}, {}, {}, {}
    align, mult, names, centre = {}, {}, {}, {}
    map_line = None
    for section, lineno, f in lines:
        if section == "map":
            map_line = map_line or lineno
            _want(f, (4, 4), "atom-index atom-type bead-index bead-type", path, lineno)
            atom = _int(f[0], "an atom index", path, lineno)
            bead = _int(f[2], "a bead index", path, lineno)
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
            _want(f, (2, 2), {"align": "bead fixpoint", "mult": "bead multiples", "names": "bead name"}[section],
                  path, lineno)
            bead = _int(f[0], "a bead index", path, lineno)
            store = {"align": align, "mult": mult, "names": names}[section]
            if bead in store:
                raise MappingError(f"bead {bead} appears twice in [{section}]", path=path, line=lineno)
            if section == "names":
                store[bead] = (f[1], lineno)
            else:
                store[bead] = (_int(f[1], "a bead index" if section == "align" else "a count", path, lineno),
                               lineno)
        elif section == "centre":
            _want(f, (2, 3), "bead atom [mass-factor]", path, lineno)
            bead = _int(f[0], "a bead index", path, lineno)
            atom = _int(f[1], "an atom index", path, lineno)
            if not 1 <= atom <= n:
                raise MappingError(f"atom {atom} is not in moleculetype {moltype.name} (atoms 1..{n})",
                                   path=path, line=lineno)
            try:
                factor = float(f[2]) if len(f) == 3 else 1.0
            except ValueError:
                raise MappingError(f"expected a mass factor (a number), got {f[2]!r}", path=path,
                                   line=lineno) from None
            if not factor > 0 or not np.isfinite(factor):
                raise MappingError(f"mass factor must be positive, got {f[2]}", path=path, line=lineno)
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


def read_mapping(paths, system) -> SystemMapping:
    """Read one or more .map files and match them to the system's moleculetypes.

    A file names its moleculetype with ``[ molecule ]`` + ``NAME``; without it, the file maps the system's
    only moleculetype, or the moleculetype whose name equals the file's stem (``PS1.map`` -> PS1).
    Every moleculetype listed in ``[ molecules ]`` needs exactly one mapping."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    used = [name for name, count in system.molecules if count > 0]
    used = list(dict.fromkeys(used))
    out = SystemMapping(system=system)
    sources = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise MappingError("mapping file not found" if not p.exists() else "not a regular file", path=p)
        lines = list(_sections(p))
        named = [(lineno, f) for s, lineno, f in lines if s == "molecule"]
        if len(named) > 1:
            raise MappingError("more than one [molecule] name; use one .map file per moleculetype",
                               path=p, line=named[1][0])
        if named:
            lineno, f = named[0]
            _want(f, (1, 1), "NAME", p, lineno)
            name = f[0]
            if name not in system.moleculetypes:
                raise MappingError(f"moleculetype {name} is not in the topology (has: "
                                   f"{', '.join(system.moleculetypes)})", path=p, line=lineno)
        elif len(used) == 1:
            name = used[0]
        elif p.stem in system.moleculetypes:
            name = p.stem
        else:
            raise MappingError("cannot tell which moleculetype this file maps; add '[ molecule ]' with one of "
                               f"{', '.join(used)}", path=p)
        if name in sources:
            raise MappingError(f"moleculetype {name} is already mapped by {sources[name]}", path=p)
        sources[name] = str(p)
        out.molecules[name] = read_molecule_mapping(p, system.moleculetypes[name], lines)
    missing = [name for name in used if name not in out.molecules]
    if missing:
        raise MappingError(f"no mapping for moleculetype(s) {', '.join(missing)} (give one .map file per "
                           "moleculetype with -m)", path=paths[0] if paths else None)
    return out


# ------------------------------------------------------------------------------------------- mapping
class Mapper:
    """Maps all-atom frames of ``system`` to CG frames with ``mapping``. Builds the bond graph walk
    (molecules made whole along bonds) and the sparse centre matrix once."""

    def __init__(self, system, mapping: SystemMapping, wrap: bool = True):
        from .geometry import WholePlan
        self.system = system
        self.flat = mapping.flat()
        self.wrap = wrap
        bonds = []
        for mt, off in system.instances():
            bonds.extend((i + off, j + off) for i, j in mt.graph.edges())
        self.plan = WholePlan(system.n_atoms, np.asarray(bonds, dtype=np.int64).reshape(-1, 2))

    def map(self, frame):
        from .geometry import wrap as wrap_positions
        from .io.frames import Frame
        whole = self.plan.apply(frame.positions, frame.box)
        beads = self.flat.centre @ whole
        if self.wrap:
            beads = wrap_positions(beads, frame.box)
        return Frame(positions=np.asarray(beads), box=np.array(frame.box, dtype=np.float64), time=frame.time,
                     step=frame.step, atoms=self.flat.atom_info(),
                     title=f"CG (gmx_dbm map) of: {frame.title}" if frame.title else "CG (gmx_dbm map)")


def map_positions(frame, system, mapping: SystemMapping, wrap: bool = True):
    """One all-atom ``Frame`` -> CG ``Frame`` (molecules made whole first; beads wrapped into the box
    the GROMACS way unless ``wrap=False``). For many frames use ``Mapper``."""
    return Mapper(system, mapping, wrap=wrap).map(frame)


def map_trajectory(trajectory, system, mapping: SystemMapping, output, structure=None, wrap: bool = True,
                   **writer_options) -> int:
    """Map every frame of ``trajectory`` (.gro/.xtc/.pdb) and write the CG frames to ``output``
    (.gro/.xtc/.pdb, written atomically). ``structure`` (optional) is checked to have the topology's
    atom count; ``trajectory`` and ``structure``, where they name their atoms, must have the topology's atom
    names in order. Returns the number of frames."""
    from .io import check_names, check_writable, open_writer, read_frame, read_frames
    check_writable(output)
    n = system.n_atoms
    names = [mt.graph.nodes[i]["name"] for mt, _ in system.instances() for i in range(mt.n_atoms)]
    if structure is not None:
        check_names(read_frame(structure, n_atoms=n), names, structure, 0, "atom", "the topology")
    mapper = Mapper(system, mapping, wrap=wrap)
    with open_writer(output, mapper.flat.atom_info(), **writer_options) as w:
        for k, frame in enumerate(read_frames(trajectory, n_atoms=n)):
            if k == 0:
                check_names(frame, names, trajectory, 0, "atom", "the topology")
            w.write(mapper.map(frame))
    log.info("mapped %d frame(s) of %d atoms to %d beads: %s", w.n_frames, n, mapper.flat.n_beads, output)
    return w.n_frames
