"""GROMACS run-parameter (.mdp) files: ``read_mdp(path) -> MdpFile``.

Keys are normalised as grompp compares them: lower case, '_' and '-' alike (written with '-'), plus the
spellings that name the same parameter (``coulomb-type`` is ``coulombtype``, ``nstxtcout`` is
``nstxout-compressed``, ...). Values are the text after '=' without the ';' comment, stripped; an empty
value (``define =``) is kept as ''. Each key remembers its line, so that a caller rejecting a value can
point at it (``MdpFile.error``). No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

# spellings grompp (or a user) uses for one parameter -> the name used here
ALIASES = {
    "coulomb-type": "coulombtype",
    "vdw-type": "vdwtype",
    "unconstrained-start": "continuation",
    "nstxtcout": "nstxout-compressed",
    "xtc-grps": "compressed-x-grps",
    "xtc-precision": "compressed-x-precision",
}


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
    ``key = value``, an empty key, or a key set twice (grompp rejects that too)."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise ConfigError("mdp file not found", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read mdp file: {exc.strerror or exc}", path=path) from None
    out = MdpFile(path)
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
        if name in out.values:
            raise ConfigError(f"{name} is set twice (first at line {out.lines[name]})", path=path, line=k)
        out.values[name] = value.strip()
        out.lines[name] = k
    return out
