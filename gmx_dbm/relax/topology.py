"""The work directory's topology: a wrapper around the user's topology with position restraints.

The user's files are never modified: a wrapper ``topol.top`` re-includes their pieces (absolute paths)
and adds, after each molecule type, ``#ifdef GMX_DBM_POSRES`` + an include of a generated
``posre_gmx_dbm_<molecule>.itp`` (restraints on heavy atoms, all atoms or none). Files that define
several molecule types are rewritten the same way into the work directory's ``topology/`` folder.

The files are read as grompp's preprocessor reads them: ``#ifdef``/``#ifndef``/``#else``/``#endif``
are evaluated with the defines given (grompp's -D) and the ``#define``/``#undef`` lines met on the way,
so molecule types and includes in inactive blocks do not count, and an include there that does not exist
is no error. Includes of restraint files that do not exist in active blocks (``#include "posres.itp"``
in the shared sPS topology) get an empty placeholder in the work directory's ``include/`` folder and a
warning; any other missing include is a TopologyError naming file and line.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TopologyError

log = logging.getLogger(__name__)

POSRES_DEFINE = "GMX_DBM_POSRES"

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+["<]([^">]+)[">]')
_HEADER_RE = re.compile(r"^\s*\[\s*([A-Za-z_ ]+?)\s*\]")
_DIRECTIVE_RE = re.compile(r"^\s*#\s*([A-Za-z_]+)\b\s*(.*)$")
_TRUE, _FALSE, _IGNORE = "true", "false", "ignore"   # states of an open block, as in grompp's gmxcpp


def _strip(line: str) -> str:
    return line.split(";", 1)[0].strip()


def _resolve(name: str, here: Path, include_dirs) -> Path | None:
    for d in [here, *include_dirs]:
        p = Path(d) / name
        if p.is_file():
            return p.resolve()
    return None


def define_map(defines) -> dict:
    """{name: value} from a dict or from grompp -D items ('POSRES', 'FC=1000', '-DPOSRES')."""
    if isinstance(defines, dict):
        return dict(defines)
    from ..io.preprocess import parse_defines
    return dict(parse_defines(defines or []))


def _walk(path: Path, defines: dict):
    """Yield (line number, text, active) for every line of ``path``. ``active`` is False for lines in
    inactive #ifdef/#ifndef blocks and for the preprocessor lines handled here (conditionals,
    #define, #undef: ``defines`` is updated in place, as grompp does while it reads)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise TopologyError(f"cannot read: {exc.strerror}", path=path) from None
    stack = []   # [(state, line number of the #ifdef/#ifndef)]
    for k, line in enumerate(lines, 1):
        d = _DIRECTIVE_RE.match(line)
        if d is None:
            yield k, line, not stack or stack[-1][0] == _TRUE
            continue
        name, arg = d.group(1), _strip(d.group(2))
        word = arg.split()[0] if arg else ""
        active = not stack or stack[-1][0] == _TRUE
        if name in ("ifdef", "ifndef"):
            if not active:
                stack.append((_IGNORE, k))
            elif not word:
                raise TopologyError(f"#{name} without a name", path=path, line=k)
            else:
                stack.append((_TRUE if (word in defines) == (name == "ifdef") else _FALSE, k))
        elif name in ("else", "endif"):
            if not stack:
                raise TopologyError(f"#{name} without an open #ifdef/#ifndef", path=path, line=k)
            if name == "endif":
                stack.pop()
            elif stack[-1][0] != _IGNORE:
                stack[-1] = (_FALSE if stack[-1][0] == _TRUE else _TRUE, stack[-1][1])
        elif not active:
            pass
        elif name == "define" and word:
            defines[word] = arg[len(word):].strip()
        elif name == "undef" and word:
            defines.pop(word, None)
        else:  # #include and anything grompp itself will judge
            yield k, line, True
            continue
        yield k, line, False
    if stack:
        raise TopologyError("#ifdef/#ifndef without a matching #endif before the end of the file",
                            path=path, line=stack[-1][1])


@dataclass
class _Scan:
    moleculetypes: list = field(default_factory=list)   # names, in definition order
    missing: list = field(default_factory=list)         # (file, line, name) of active includes not found


def _scan(path: Path, include_dirs, defines: dict, seen=frozenset()) -> _Scan:
    """Moleculetypes a file defines (with its includes) and active includes that cannot be found.
    ``defines`` is updated by the #define/#undef lines read."""
    out = _Scan()
    if path in seen:
        return out
    seen = seen | {path}
    want_name = False
    for k, line, active in _walk(path, defines):
        if not active:
            continue
        m = _INCLUDE_RE.match(line)
        if m:
            target = _resolve(m.group(1), path.parent, include_dirs)
            if target is None:
                out.missing.append((path, k, m.group(1)))
            else:
                sub = _scan(target, include_dirs, defines, seen)
                out.moleculetypes += sub.moleculetypes
                out.missing += sub.missing
            continue
        h = _HEADER_RE.match(line)
        if h:
            want_name = h.group(1).strip().lower() == "moleculetype"
            continue
        if want_name and _strip(line) and not line.lstrip().startswith("#"):
            out.moleculetypes.append(_strip(line).split()[0])
            want_name = False
    return out


def posres_filename(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
    return f"posre_gmx_dbm_{safe}.itp"


def _posres_block(name: str, with_posres: set) -> list:
    if name not in with_posres:
        return []
    return [f"; gmx_dbm: position restraints for {name}", f"#ifdef {POSRES_DEFINE}",
            f'#include "{posres_filename(name)}"', "#endif"]


def _rewrite(path: Path, include_dirs, with_posres: set, copies_dir: Path, header: str, defines: dict) -> str:
    """Text of a copy of ``path`` with absolute includes and restraint includes after each moleculetype.
    Included files defining one moleculetype are included as they are; files defining several are
    rewritten the same way into ``copies_dir``. Lines in inactive blocks are copied unchanged (grompp
    skips them as well)."""
    out = [header]
    current = None
    want_name = False
    for _, line, active in _walk(path, defines):
        if not active:
            out.append(line)
            continue
        m = _INCLUDE_RE.match(line)
        if m:
            target = _resolve(m.group(1), path.parent, include_dirs)
            if target is None:  # a restraint placeholder in the include folder, found by grompp's -I
                out.append(line)
                continue
            # counted on a copy of the defines: an include guard must not hide the file from its rewrite
            after = dict(defines)
            mts = _scan(target, include_dirs, after).moleculetypes
            if len(mts) <= 1:
                defines.clear()
                defines.update(after)   # its #define lines hold for the rest, as for grompp
                if mts and current:
                    out += _posres_block(current, with_posres)
                out.append(f'#include "{target}"')
                if mts:
                    current = mts[0]
            else:
                if current:
                    out += _posres_block(current, with_posres)
                    current = None
                copies_dir.mkdir(parents=True, exist_ok=True)
                copy = copies_dir / f"{len(list(copies_dir.iterdir())):02d}_{target.name}"
                copy.write_text(_rewrite(target, include_dirs, with_posres, copies_dir,
                                         f"; gmx_dbm relax: copy of {target} with restraint includes",
                                         defines) + "\n")
                out.append(f'#include "{copy.resolve()}"')
            continue
        h = _HEADER_RE.match(line)
        if h:
            sec = h.group(1).strip().lower()
            if sec in ("moleculetype", "system") and current:
                out += _posres_block(current, with_posres)
                current = None
            want_name = sec == "moleculetype"
            out.append(line)
            continue
        if want_name and _strip(line) and not line.lstrip().startswith("#"):
            current = _strip(line).split()[0]
            want_name = False
        out.append(line)
    if current:
        out += _posres_block(current, with_posres)
    return "\n".join(out)


@dataclass
class PreparedTopology:
    """A work directory's topology: wrapper .top, include folders for grompp, the parsed system."""
    top: Path
    include_dirs: list
    system: object
    flat: object
    restrained: np.ndarray      # global indices of restrained atoms
    heavy: np.ndarray           # global indices of heavy atoms (not hydrogen by element, with mass)
    defines: list               # grompp -D items ('NAME' or 'NAME=VALUE')


def heavy_atoms(system, moleculetype) -> np.ndarray:
    """(n,) bool: the atoms of a moleculetype that are not hydrogens, by element (``gmx_dbm.elements``,
    the rule ``FlatTopology.is_heavy`` follows), so hydrogen-mass repartitioning changes nothing."""
    from ..elements import elements
    types = moleculetype.atom_attr("type")
    znum = [getattr(system.atomtypes.get(t), "atomic_number", None) for t in types]
    return elements(moleculetype.atom_attr("name"), types, moleculetype.atom_attr("mass"), znum) != "H"


def _write_restraints(system, workdir: Path, restrain: str, fc: float) -> tuple:
    """posre_gmx_dbm_<molecule>.itp for each molecule type with atoms to restrain; massless sites are
    never restrained. Returns (names with a restraint file, global indices of restrained atoms)."""
    chosen = {}
    if restrain != "none":
        for name in dict(system.molecules):
            mt = system.moleculetypes[name]
            masses = np.asarray(mt.atom_attr("mass"), dtype=float)
            wanted = np.ones(len(masses), bool) if restrain == "all" else heavy_atoms(system, mt)
            sel = np.nonzero(wanted & (masses > 0))[0]
            if not len(sel):
                continue
            rows = "\n".join(f"{i + 1:6d}     1 {fc:10g} {fc:10g} {fc:10g}" for i in sel)
            (workdir / posres_filename(name)).write_text(
                f"; gmx_dbm relax: {restrain} atoms of {name} restrained to the -r reference\n"
                f"[ position_restraints ]\n;   ai  funct        fcx        fcy        fcz\n{rows}\n")
            chosen[name] = sel
    restrained = [offset + chosen[mt.name] for mt, offset in system.instances() if mt.name in chosen]
    return set(chosen), (np.concatenate(restrained).astype(np.int64) if restrained else np.zeros(0, np.int64))


def prepare_topology(topology, workdir, restrain: str = "heavy", fc: float = 1000.0, defines=None,
                     include_dirs=None) -> PreparedTopology:
    """Write ``workdir/topol.top`` (wrapper), ``posre_gmx_dbm_*.itp`` and restraint placeholders.
    ``defines``: grompp -D items or a {name: value} dict; they decide the #ifdef blocks read."""
    from ..gromacs import gmx_topology_dir
    from ..topology import read_topology
    top = Path(topology).resolve()
    if not top.is_file():
        raise TopologyError("topology file not found", path=topology)
    given = define_map(defines)
    workdir = Path(workdir).resolve()
    inc = workdir / "include"
    inc.mkdir(parents=True, exist_ok=True)
    search = [Path(d).resolve() for d in (include_dirs or [])]
    gmxlib = gmx_topology_dir()
    scan_dirs = search + ([gmxlib] if gmxlib else [])
    for path, line, name in _scan(top, scan_dirs, dict(given)).missing:
        if "posre" in Path(name).name.lower():
            target = inc / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"; gmx_dbm relax: placeholder for '{name}', included by {path}:{line} but "
                              "not found; restraints come from posre_gmx_dbm_*.itp instead\n")
            log.warning("%s:%d includes %s, which does not exist: an empty placeholder is used (work "
                        "directory include/ folder)", path, line, name)
        else:
            raise TopologyError(f"#include file '{name}' not found (searched: {path.parent}"
                                f"{''.join(', ' + str(d) for d in scan_dirs)})", path=path, line=line)
    all_dirs = [inc, *search]
    system = read_topology(top, defines=dict(given), include_dirs=[str(d) for d in all_dirs])
    flat = system.flat()
    with_posres, restrained = _write_restraints(system, workdir, restrain, fc)
    text = _rewrite(top, scan_dirs, with_posres, workdir / "topology",
                    f"; gmx_dbm relax: wrapper of {top} (that file is not modified)", dict(given))
    (workdir / "topol.top").write_text(text + "\n")
    heavy = np.nonzero(np.asarray(flat.is_heavy) & (np.asarray(flat.masses) > 0))[0]
    if isinstance(defines, dict):
        items = [k if v == "" else f"{k}={v}" for k, v in defines.items()]
    else:
        items = [d[2:] if d.startswith("-D") else d for d in (defines or [])]
    return PreparedTopology(workdir / "topol.top", all_dirs, system, flat, restrained, heavy, items)
