"""GROMACS run-parameter (.mdp) files: ``read_mdp(path) -> MdpFile``.

Keys are normalised as grompp compares them: lower case, '_' and '-' alike (written with '-'), plus the
spellings that name the same parameter (``coulomb-type`` is ``coulombtype``, ``nstxtcout`` is
``nstxout-compressed``, ...). Values are the text after '=' without the ';' comment, stripped; an empty
value (``define =``) is kept as ''. Each key remembers its line, so that a caller rejecting a value can
point at it (``MdpFile.error``). Entries that GROMACS 2022 ignores as obsolete (files of older versions:
``title``, ``cpp``, ``ns-type``, ...) are kept and named in one warning. No torch here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

# spellings grompp (or a user) uses for one parameter -> the name used here
ALIASES = {
    "coulomb-type": "coulombtype",
    "vdw-type": "vdwtype",
    "unconstrained-start": "continuation",
    "nstxtcout": "nstxout-compressed",
    "xtc-grps": "compressed-x-grps",
    "xtc-precision": "compressed-x-precision",
}

# entries grompp 2022 reports as "Ignoring obsolete mdp entry" (checked with gmx grompp 2022.5)
OBSOLETE = frozenset({
    "title", "cpp", "domain-decomposition", "andersen-seed", "dihre", "dihre-fc", "dihre-tau", "nstdihreout",
    "nstcheckpoint", "optimize-fft", "ns-type", "rlistlong", "nstcalclr", "pull-print-com2", "gb-algorithm",
    "nstgbradii", "rgbradii", "gb-saltconc", "gb-epsilon-solvent", "gb-obc-alpha", "gb-obc-beta", "gb-obc-gamma",
    "gb-dielectric-offset", "sa-algorithm", "sa-surface-tension",
})


def normalise_key(key: str) -> str:
    """The name a parameter is stored under: lower case, '-' for '_', aliases resolved."""
    k = str(key).strip().lower().replace("_", "-")
    return ALIASES.get(k, k)


@dataclass
class MdpFile:
    """The entries of one .mdp file. ``values``: {normalised key: value}; ``lines``: {key: 1-based line}."""
    path: Path
    values: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.values.get(normalise_key(key), default)

    def __contains__(self, key) -> bool:
        return normalise_key(key) in self.values

    def __getitem__(self, key: str) -> str:
        return self.values[normalise_key(key)]

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def items(self):
        return self.values.items()

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError at the line that sets ``key`` (the file alone when the key is not set)."""
        return ConfigError(message, path=self.path, line=self.lines.get(normalise_key(key)))


def read_mdp(path) -> MdpFile:
    """Parse an .mdp file. ConfigError (with file and line) for a missing/unreadable file, a line that is not
    ``key = value``, an empty key, or a key set twice, also under its old and new names
    (``unconstrained-start`` and ``continuation``; grompp rejects both too). Obsolete entries: a warning."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise ConfigError("mdp file not found", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read mdp file: {exc.strerror or exc}", path=path) from None
    out = MdpFile(path)
    spelled = {}   # name -> the key as written (lower case, '-'), for the message about an old name
    for k, line in enumerate(text.splitlines(), 1):
        body = line.split(";", 1)[0].strip()
        if not body:
            continue
        if "=" not in body:
            raise ConfigError(f"not a 'key = value' line: {line.strip()!r}", path=path, line=k)
        key, value = body.split("=", 1)
        if not key.strip():
            raise ConfigError(f"no parameter name before '=': {line.strip()!r}", path=path, line=k)
        name = normalise_key(key)
        written = key.strip().lower().replace("_", "-")
        if name in out.values:
            first = spelled[name]
            if first == written:
                raise ConfigError(f"{name} is set twice (first at line {out.lines[name]})", path=path, line=k)
            old, new = (written, first) if written != name else (first, written)
            raise ConfigError(f"{written} is set here and {first} at line {out.lines[name]}: {old} is the old name "
                              f"of {new}; keep one (grompp refuses both too)", path=path, line=k)
        out.values[name] = value.strip()
        out.lines[name] = k
        spelled[name] = written
    obsolete = [f"{spelled[n]} (line {out.lines[n]})" for n in out.values if n in OBSOLETE]
    if obsolete:
        log.warning("%s: ignoring obsolete entries, as GROMACS 2022 does: %s", path, ", ".join(obsolete))
    return out
