"""``read_mapping``: the mapping files of a system, whatever their format, matched to its moleculetypes.

Formats (told apart by their sections, ``docs/MAPPING_FORMAT.md``): per-molecule files (``[ map ]``,
deepBackmap's format: one moleculetype by atom index), repeat-unit files (``[ unit ]``: monomers matched
by residue names or by the molecule graph) and backward's per-residue files (``[ martini ]``). A
moleculetype named by a per-molecule file takes that file; every other moleculetype in use is cut into the
units of all repeat-unit and backward files given together.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import MappingError
from .lexer import read_sections, section_names, want
from .model import SystemMapping
from .permolecule import SECTIONS as PER_MOLECULE_SECTIONS
from .permolecule import read_molecule_mapping

FORMATS = ("per-molecule", "repeat-unit", "backward")


def mapping_format(path: Path) -> str:
    names = set(section_names(path))
    if "unit" in names:
        if "map" in names:
            raise MappingError("a file has either [ map ] (one moleculetype by atom index) or [ unit ] "
                               "sections (repeat units), not both", path=path)
        return "repeat-unit"
    if "martini" in names:
        return "backward"
    return "per-molecule"


def read_units_file(path: Path) -> list:
    """The units of a repeat-unit or backward file."""
    if mapping_format(path) == "backward":
        from .backward import read_backward
        return read_backward(path)
    from .units import read_units
    return read_units(path)


def read_mapping(paths, system) -> SystemMapping:
    """Read one or more mapping files and map every moleculetype in the system's ``[ molecules ]``.

    A per-molecule file names its moleculetype with ``[ molecule ]`` + ``NAME``; without it, the file maps
    the system's only moleculetype, or the moleculetype whose name equals the file's stem (``PS1.map`` ->
    PS1). Each moleculetype takes at most one per-molecule file; the others are cut into repeat units."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    used = [name for name, count in system.molecules if count > 0]
    used = list(dict.fromkeys(used))
    out = SystemMapping(system=system)
    sources = {}
    units, unit_files = [], []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise MappingError("mapping file not found" if not p.exists() else "not a regular file", path=p)
        if mapping_format(p) != "per-molecule":
            found = read_units_file(p)
            for u in found:
                clash = next((v for v in units if v.name == u.name), None)
                if clash is not None:
                    raise MappingError(f"unit {u.name} is also defined in {clash.path}:{clash.line}", path=p,
                                       line=u.line)
            units.extend(found)
            unit_files.append(str(p))
            continue
        lines = [x for x in read_sections(p, PER_MOLECULE_SECTIONS) if x[2] is not None]
        named = [(lineno, f) for s, lineno, f in lines if s == "molecule"]
        if len(named) > 1:
            raise MappingError("more than one [molecule] name; use one .map file per moleculetype",
                               path=p, line=named[1][0])
        if named:
            lineno, f = named[0]
            want(f, (1, 1), "NAME", p, lineno)
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
    if missing and units:
        from .units import map_molecule
        files = ", ".join(unit_files)
        for name in missing:
            out.molecules[name] = map_molecule(system.moleculetypes[name], units, files)
    elif missing:
        raise MappingError(f"no mapping for moleculetype(s) {', '.join(missing)} (give a repeat-unit mapping "
                           "or one per-molecule .map file per moleculetype with -m)",
                           path=paths[0] if paths else None)
    return out
