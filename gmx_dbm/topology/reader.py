"""Read GROMACS topologies (.top/.itp) into ``gmx_dbm.topology.System``.

ParmEd does the C preprocessing (``#include``, ``#define``, ``#ifdef``; see ``gmx_dbm.io.preprocess``,
which makes it remember file and line of every line) and reads the force-field tables it handles reliably
([ defaults ], [ atomtypes ], [ nonbond_params ]; converted back by ``gmx_dbm.units``). The molecule
sections are read here from the preprocessed lines, because ParmEd drops what we need there: the func
and raw parameters of G96 bonds/angles, nrexcl (it assumes 3), and which 1-4 pairs the file really lists
(it invents missing ones); the at.num column of [ atomtypes ] is taken from the file too (ParmEd guesses
one from the mass where it is missing). Each section's lines go to one handler method, registered by
section name with ``@_section``. Parameter lookup from [ *types ] follows grompp's rules (bonded types,
wildcards X for dihedrals with the most specific match first, adjacent type-9 lines add up).
Every error names the file and line.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from collections import OrderedDict
from string import ascii_letters

import networkx as nx

from .. import units
from ..errors import TopologyError, TrajectoryError
from ..io.preprocess import Line, parse_defines, preprocess, tracked_preprocessor  # noqa: F401 (re-exported)
from .model import AtomType, Defaults, Interaction, MoleculeType, System

log = logging.getLogger(__name__)

# Number of parameters per (section, func) that gmx_dbm computes energies for.
_NPARAMS = {
    ("bonds", 1): 2, ("bonds", 2): 2,
    ("angles", 1): 2, ("angles", 2): 2,
    ("dihedrals", 1): 3, ("dihedrals", 9): 3, ("dihedrals", 4): 3,
    ("dihedrals", 2): 2, ("dihedrals", 3): 6,
    ("pairs", 1): 2,
}
_NATOMS = {"bonds": 2, "angles": 3, "dihedrals": 4, "pairs": 2, "constraints": 2}
# grompp's parameter tables: dihedral funcs 1 and 9 share one (F_PDIHS).
_DIH_TABLE = {1: 1, 9: 1, 2: 2, 3: 3, 4: 4}
# Sections read by ParmEd (force-field tables); everything else is read here.
_PARMED_SECTIONS = {"defaults", "atomtypes", "nonbond_params"}
_IGNORED_SECTIONS = {"position_restraints", "distance_restraints", "dihedral_restraints",
                     "orientation_restraints", "angle_restraints", "angle_restraints_z", "implicit_genborn_params",
                     "cmaptypes", "constrainttypes"}


def _floats(line: Line, words, what):
    try:
        return tuple(float(w) for w in words)
    except ValueError:
        raise line.error(f"non-numeric {what}: {' '.join(words)}") from None


def _ints(line: Line, words, what):
    try:
        return tuple(int(w) for w in words)
    except ValueError:
        raise line.error(f"expected integer {what}, got: {' '.join(words)}") from None


# section name -> handler(reader, line, words) for each line of that section; filled by @_section below
_SECTION_HANDLERS: dict = {}
# sections that only make sense inside a [ moleculetype ]
_MOLECULE_SECTIONS: set = set()


def _section(*names, in_molecule=False):
    """Register a ``_Reader`` method as the handler of the lines of sections ``names``."""
    def register(method):
        for name in names:
            _SECTION_HANDLERS[name] = method
            if in_molecule:
                _MOLECULE_SECTIONS.add(name)
        return method
    return register


class _Reader:
    def __init__(self, lines, path):
        self.lines = lines
        self.path = str(path)
        self.bondtypes = {}      # (func, a, b) -> params
        self.angletypes = {}     # (func, a, b, c) -> params
        self.dihtypes = {1: [], 2: [], 3: [], 4: []}   # table -> [(types, params)] incl. reversed copies
        self.pairtypes = {}      # (func, a, b) -> params
        self.moltypes = OrderedDict()
        self.molecules = []
        self.name = ""
        self.ff_lines = []       # lines for ParmEd's force-field tables
        self.defaults_line = None
        self.atomic_numbers = {}  # atom type -> the at.num column of [ atomtypes ], where given
        self.section = None
        self.mol = None          # the [ moleculetype ] being read

    # ---------------------------------------------------------------- pass 1
    def read(self) -> System:
        for line in self.lines:
            if line.text.startswith("["):
                self._enter_section(line)
                continue
            if self.section is None:
                raise line.error("text before the first [ section ]")
            _SECTION_HANDLERS[self.section](self, line, line.text.split())
        return self._build()

    def _enter_section(self, line):
        text = line.text
        if not text.endswith("]"):
            raise line.error(f"malformed section header '{text}'")
        section = text[1:-1].strip().lower()
        if section not in _SECTION_HANDLERS:
            raise line.error(f"section [ {section} ] is not supported by gmx_dbm")
        if section in _MOLECULE_SECTIONS and self.mol is None:
            raise line.error(f"[ {section} ] outside a [ moleculetype ]")
        if section in _PARMED_SECTIONS:
            self.ff_lines.append(f"[ {section} ]")
        elif section == "moleculetype":
            self.mol = None
        elif section in _IGNORED_SECTIONS:
            log.debug("%s:%d: section [ %s ] is not used by gmx_dbm", line.path, line.lineno, section)
        self.section = section

    # ---------------------------------------------------------------- section handlers
    @_section(*_IGNORED_SECTIONS)
    def _ignored(self, line, words):
        pass

    @_section("defaults")
    def _defaults(self, line, words):
        self.ff_lines.append(line.text)
        self.defaults_line = line

    @_section("atomtypes")
    def _atomtypes(self, line, words):
        self.ff_lines.append(line.text)
        if len(words) < 6:
            raise line.error("[ atomtypes ] line needs at least: name mass charge ptype V W")
        _floats(line, words[-2:], "LJ parameters")
        atnum = _atomtype_atomic_number(line, words)
        if atnum is not None:
            self.atomic_numbers[words[0]] = atnum
        else:
            self.atomic_numbers.pop(words[0], None)   # a redefinition without at.num

    @_section("nonbond_params")
    def _nonbond_params(self, line, words):
        self.ff_lines.append(line.text)

    @_section("bondtypes")
    def _bondtypes(self, line, words):
        self._push_type(line, words, 2, self.bondtypes)

    @_section("angletypes")
    def _angletypes(self, line, words):
        self._push_type(line, words, 3, self.angletypes)

    @_section("pairtypes")
    def _pairtypes(self, line, words):
        self._push_type(line, words, 2, self.pairtypes)

    @_section("dihedraltypes")
    def _dihedraltypes(self, line, words):
        self._push_dihedraltype(line, words)

    @_section("moleculetype")
    def _moleculetype(self, line, words):
        if len(words) < 2:
            raise line.error("[ moleculetype ] needs: name nrexcl")
        name = words[0]
        if name in self.moltypes:
            raise line.error(f"molecule type {name} defined twice")
        self.mol = {"name": name, "nrexcl": _ints(line, words[1:2], "nrexcl")[0], "atoms": [],
                    "bonds": [], "angles": [], "dihedrals": [], "pairs": [], "exclusions": [],
                    "constraints": [], "line": line}
        self.moltypes[name] = self.mol

    @_section("atoms", in_molecule=True)
    def _atoms(self, line, words):
        if len(words) < 6:
            raise line.error("[ atoms ] line needs at least: nr type resnr residue atom cgnr")
        self.mol["atoms"].append((line, words))

    @_section("bonds", "angles", "dihedrals", "pairs", "constraints", in_molecule=True)
    def _interactions(self, line, words):
        self.mol[self.section].append((line, words))   # resolved in _build_molecule, after all types

    @_section("exclusions", in_molecule=True)
    def _exclusions(self, line, words):
        idx = _ints(line, words, "atom numbers")
        self.mol["exclusions"].extend((line, idx[0], j) for j in idx[1:])

    @_section("settles", in_molecule=True)
    def _settles(self, line, words):
        log.warning("%s:%d: [ settles ] ignored (rigid water is not supported by gmx_dbm's force field)",
                    line.path, line.lineno)

    @_section("system")
    def _system(self, line, words):
        self.name = (self.name + " " + line.text).strip()

    @_section("molecules")
    def _molecules(self, line, words):
        if len(words) != 2:
            raise line.error("[ molecules ] line needs: name count")
        if words[0] not in self.moltypes:
            raise line.error(f"molecule type '{words[0]}' in [ molecules ] is not defined")
        self.molecules.append((words[0], _ints(line, words[1:], "count")[0], line))

    def _push_type(self, line, words, nat, table):
        if len(words) < nat + 1:
            raise line.error("too few fields")
        func = _ints(line, words[nat:nat + 1], "func")[0]
        params = _floats(line, words[nat + 1:], "parameters")
        key = tuple(words[:nat])
        table[(func, *key)] = params
        table[(func, *reversed(key))] = params

    def _push_dihedraltype(self, line, words):
        # 4 atom types, or the old 2-type form (impropers: types 1 and 4; propers: types 2 and 3)
        if len(words) > 4 and _is_int(words[4]):
            types, func, rest = words[:4], int(words[4]), words[5:]
        elif len(words) > 2 and _is_int(words[2]):
            func, rest = int(words[2]), words[3:]
            types = [words[0], "X", "X", words[1]] if func in (2, 4) else ["X", words[0], words[1], "X"]
        else:
            raise line.error("cannot read [ dihedraltypes ] line (expected 2 or 4 types and a func)")
        if func not in _DIH_TABLE:
            raise line.error(f"dihedral type function {func} is not supported by gmx_dbm")
        params = _floats(line, rest, "parameters")
        table = self.dihtypes[_DIH_TABLE[func]]
        table.append((tuple(types), params, func))
        table.append((tuple(reversed(types)), params, func))

    # ---------------------------------------------------------------- force-field tables (ParmEd)
    def _read_ff_tables(self):
        from parmed.gromacs import GromacsTopologyFile
        text = "\n".join(self.ff_lines) + "\n"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                top = GromacsTopologyFile()
                top.read(io.StringIO(text), defines=OrderedDict(), parametrize=False)
            except Exception as exc:   # ParmEd's errors carry no location: name our file
                raise TopologyError(f"cannot read force-field tables ([ defaults ]/[ atomtypes ]/"
                                    f"[ nonbond_params ]): {exc}", path=self.path) from None
        d = getattr(top, "defaults", None)
        if d is None or self.defaults_line is None:
            raise TopologyError("no [ defaults ] section (is the force field included?)", path=self.path)
        nbfunc, comb = int(d.nbfunc), int(d.comb_rule)
        if nbfunc != 1:
            raise self.defaults_line.error(f"nbfunc {nbfunc} (Buckingham) is not supported; only 1 (LJ)")
        if comb not in (1, 2, 3):
            raise self.defaults_line.error(f"unknown combination rule {comb}")
        gen_pairs = str(d.gen_pairs).strip().lower() in ("yes", "y", "true", "1")
        self.defaults = Defaults(nbfunc, comb, gen_pairs, float(d.fudgeLJ), float(d.fudgeQQ))
        self.atomtypes = {}
        self.bondtype_of = {}
        for name, at in top.parameterset.atom_types.items():
            a, b = units.lj_columns_from_parmed_atomtype(at.rmin, at.epsilon)
            if comb == 1:
                c6, c12 = a, b
                sig, eps = None, None
            else:
                sig, eps = a, b
                c6, c12 = units.sigma_epsilon_to_c6_c12(a, b)
            # ParmEd guesses an atomic number from the mass where the file has none: take only the file's
            self.atomtypes[name] = AtomType(name, float(at.mass), float(at.charge or 0.0), c6, c12, sig, eps,
                                            self.atomic_numbers.get(name))
            self.bondtype_of[name] = at.bond_type or name
        self.nonbond_params = {}
        for (ta, tb), (eps_kcal, rmin) in top.parameterset.nbfix_types.items():
            a, b = units.lj_columns_from_parmed_nbfix(rmin, eps_kcal)
            self.nonbond_params[tuple(sorted((ta, tb)))] = (a, b) if comb == 1 else \
                units.sigma_epsilon_to_c6_c12(a, b)

    # ---------------------------------------------------------------- molecules
    def _build(self) -> System:
        self._read_ff_tables()
        moltypes = OrderedDict()
        for name, mol in self.moltypes.items():
            moltypes[name] = self._build_molecule(mol)
        molecules = [(name, count) for name, count, _ in self.molecules]
        for name, count, line in self.molecules:
            if count < 0:
                raise line.error(f"negative molecule count {count}")
        return System(self.defaults, self.atomtypes, moltypes, molecules, self.nonbond_params,
                      name=self.name, path=self.path)

    def _build_molecule(self, mol) -> MoleculeType:
        name = mol["name"]
        g = nx.Graph()
        types = []
        for k, (line, w) in enumerate(mol["atoms"]):
            nr = _ints(line, w[:1], "atom number")[0]
            if nr != k + 1:
                raise line.error(f"atoms must be numbered 1, 2, ... in order; expected {k + 1}, got {nr}",
                                 where=f"molecule {name}")
            atype = w[1]
            if atype not in self.atomtypes:
                raise line.error(f"atom type '{atype}' of atom {nr} ({w[4]}) is not in [ atomtypes ]",
                                 where=f"molecule {name}")
            at = self.atomtypes[atype]
            charge = _floats(line, w[6:7], "charge")[0] if len(w) > 6 else at.charge
            mass = _floats(line, w[7:8], "mass")[0] if len(w) > 7 else at.mass
            resid = int("".join(c for c in w[2] if c.isdigit() or c == "-") or 0)
            g.add_node(k, name=w[4], type=atype, mass=mass, charge=charge, resid=resid, resname=w[3],
                       cgnr=int(w[5]) if _is_int(w[5]) else k + 1, source=f"{line.path}:{line.lineno}")
            types.append(atype)
        n = len(types)
        btypes = [self.bondtype_of[t] for t in types]
        inter = {"bonds": [], "angles": [], "dihedrals": [], "pairs": []}

        def atoms_of(line, w, nat, section):
            if len(w) < nat:
                raise line.error(f"[ {section} ] line needs {nat} atom numbers", where=f"molecule {name}")
            idx = _ints(line, w[:nat], "atom numbers")
            for i in idx:
                if not 1 <= i <= n:
                    raise line.error(f"atom number {i} out of range 1..{n}", where=f"molecule {name}")
            func = _ints(line, w[nat:nat + 1], "func")[0] if len(w) > nat else 1   # grompp's default
            return tuple(i - 1 for i in idx), func

        def describe(idx):
            return "-".join(f"{i + 1}({g.nodes[i]['name']}/{types[i]})" for i in idx)

        for section in ("bonds", "angles", "dihedrals", "pairs", "constraints"):
            nat = _NATOMS[section]
            for line, w in mol[section]:
                idx, func = atoms_of(line, w, nat, section)
                if section == "constraints":
                    g.add_edge(*idx)
                    continue
                if section == "bonds" and func == 5:   # connection: graph edge only
                    g.add_edge(*idx)
                    continue
                need = _NPARAMS.get((section, func))
                if need is None:
                    raise line.error(f"{section[:-1]} function {func} is not supported by gmx_dbm",
                                     where=f"molecule {name}")
                raw = _floats(line, w[nat + 1:], "parameters")
                if section == "bonds":
                    g.add_edge(*idx)
                if raw:
                    if len(raw) < need:
                        raise line.error(f"{section[:-1]} func {func} needs {need} parameters, got {len(raw)}",
                                         where=f"molecule {name}")
                    terms = [raw[:need]]
                else:
                    terms = self._lookup(section, func, idx, types, btypes)
                    if not terms:
                        table = "pairtypes" if section == "pairs" else section[:-1] + "types"
                        extra = " and gen-pairs is no" if section == "pairs" else ""
                        raise line.error(f"no parameters for {section[:-1]} {describe(idx)} func {func}: "
                                         f"none inline and no match in [ {table} ]{extra}",
                                         where=f"molecule {name}")
                for p in terms:
                    if section == "pairs" and raw and self.defaults.comb_rule in (2, 3):
                        p = units.sigma_epsilon_to_c6_c12(*p)
                    if section == "dihedrals" and func in (1, 4, 9):
                        p = (p[0], p[1], float(int(round(p[2]))))
                    inter[section].append(Interaction(idx, func, tuple(float(x) for x in p)))
        excl = []
        for line, i, j in mol["exclusions"]:
            for a in (i, j):
                if not 1 <= a <= n:
                    raise line.error(f"atom number {a} out of range 1..{n}", where=f"molecule {name}")
            if i != j:
                excl.append((i - 1, j - 1))
        src = f"{mol['line'].path}:{mol['line'].lineno}"
        return MoleculeType(name, mol["nrexcl"], g, inter, excl, source=src)

    def _lookup(self, section, func, idx, types, btypes):
        if section == "bonds":
            p = self.bondtypes.get((func, *(btypes[i] for i in idx)))
            return [p[:2]] if p else []
        if section == "angles":
            p = self.angletypes.get((func, *(btypes[i] for i in idx)))
            return [p[:2]] if p else []
        if section == "pairs":
            p = self.pairtypes.get((func, *(types[i] for i in idx)))   # pairs use non-bonded types
            if p:
                if self.defaults.comb_rule in (2, 3):
                    return [units.sigma_epsilon_to_c6_c12(*p[:2])]
                return [p[:2]]
            if self.defaults.gen_pairs:
                c6, c12 = _lj(self, types[idx[0]], types[idx[1]])
                return [(self.defaults.fudge_lj * c6, self.defaults.fudge_lj * c12)]
            return []
        # dihedrals: the first entry with the most non-wildcard matches; for type 9 the following
        # entries (every second one: grompp stores a reversed copy after each) with the same types add terms
        table = self.dihtypes[_DIH_TABLE[func]]
        bt = [btypes[i] for i in idx]
        best, best_n = None, -1
        for k, (tt, _, _) in enumerate(table):
            nmatch = 0
            for want, have in zip(tt, bt):
                if want == "X":
                    continue
                if want != have:
                    nmatch = -1
                    break
                nmatch += 1
            if nmatch > best_n:
                best, best_n = k, nmatch
                if nmatch == 4:
                    break
        if best is None:
            return []
        need = _NPARAMS[("dihedrals", func)]
        terms = [table[best][1][:need]]
        if func == 9:
            k = best + 2
            while k < len(table) and table[k][0] == table[best][0]:
                terms.append(table[k][1][:need])
                k += 2
        return terms


def _lj(reader, ta, tb):
    system = System(reader.defaults, reader.atomtypes, {}, [], reader.nonbond_params)
    return system.lj_c6_c12(ta, tb)


def _is_ptype(word: str) -> bool:
    return len(word) == 1 and word in ascii_letters


def _atomtype_atomic_number(line: Line, words) -> int | None:
    """The at.num column of an [ atomtypes ] line, or None where the line has none.

    grompp's rule (``push_at``): the particle type (one letter) is field 3 without bonded type and
    at.num (name mass charge ptype ...), field 5 with both (name btype at.num mass charge ptype ...);
    at field 4 one of them is there: at.num if field 1 does not start with a letter."""
    if _is_ptype(words[3]):
        return None
    if len(words) > 5 and _is_ptype(words[5]):
        text = words[2]
    elif _is_ptype(words[4]) and not words[1][:1].isalpha():
        text = words[1]
    else:
        return None
    try:
        return int(text)
    except ValueError:
        raise line.error(f"expected an integer atomic number (at.num), got '{text}'") from None


def _is_int(word: str) -> bool:
    try:
        int(word)
        return True
    except ValueError:
        return False


def read_topology(path, defines=None, include_dirs=None) -> System:
    """Read a GROMACS topology. ``defines``: dict (or list of 'NAME[=VALUE]' as for grompp -D);
    ``include_dirs``: extra #include folders (the topology's own folder and GROMACS' share/gromacs/top
    of the found gmx are searched too)."""
    if defines is not None and not isinstance(defines, dict):
        defines = parse_defines(defines)
    lines = preprocess(path, defines, include_dirs)
    system = _Reader(lines, path).read()
    if not system.molecules:
        raise TopologyError("no [ molecules ] section: nothing to simulate", path=str(path))
    log.debug("read %s: %d atoms, %d molecule types", path, system.n_atoms, len(system.moleculetypes))
    return system


def check_structure(system: System, n_atoms: int, path=None) -> None:
    """Raise TrajectoryError when a structure's atom count differs from the topology's."""
    if int(n_atoms) != system.n_atoms:
        counts = ", ".join(f"{c} x {m} ({system.moleculetypes[m].n_atoms} atoms)" for m, c in system.molecules)
        raise TrajectoryError(f"has {n_atoms} atoms but the topology {system.path or ''} has {system.n_atoms} "
                              f"([ molecules ]: {counts})", path=None if path is None else os.fspath(path))
