"""The text layer shared by every mapping format: sections, comments, fields, and errors with file:line."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import MappingError

_HEADER = re.compile(r"^\[\s*(/?)\s*([A-Za-z_]+)\s*\]$")


def read_sections(path: Path, known: tuple, aliases: dict | None = None):
    """Yield (section, lineno, fields) for every data line of ``path``; section names must be in ``known``
    (``aliases`` maps other spellings onto them). ``;`` starts a comment; closing tags (``[/map]``) end a
    section."""
    aliases = {"center": "centre", **(aliases or {})}
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
            name = aliases.get(name, name)
            if name not in known:
                raise MappingError(f"unknown section [{name}]; known: {', '.join(known)}",
                                   path=path, line=lineno)
            section = None if closing else name
            if section is not None:
                yield section, lineno, None      # a header: formats with blocks need to see it
            continue
        if section is None:
            shown = line if len(line) <= 60 else line[:60] + "..."
            raise MappingError(f"data line {shown!r} outside a section; expected a '[ map ]' or other "
                               "section header first", path=path, line=lineno)
        yield section, lineno, line.split()


def section_names(path: Path) -> list:
    """The section names of a mapping file, lower case, in order (for telling formats apart)."""
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise MappingError(f"cannot read mapping file: {exc.strerror}", path=path) from None
    for raw in text.splitlines():
        m = _HEADER.match(raw.split(";", 1)[0].strip())
        if m and not m.group(1):
            out.append(m.group(2).lower())
    return out


def to_int(text, what, path, lineno) -> int:
    try:
        return int(text)
    except ValueError:
        raise MappingError(f"expected {what} (an integer), got {text!r}", path=path, line=lineno) from None


def to_factor(text, path, lineno) -> float:
    """A positive, finite mass factor."""
    import math
    try:
        factor = float(text)
    except ValueError:
        raise MappingError(f"expected a mass factor (a number), got {text!r}", path=path, line=lineno) from None
    if not factor > 0 or not math.isfinite(factor):
        raise MappingError(f"mass factor must be positive, got {text}", path=path, line=lineno)
    return factor


def want(fields, n, form, path, lineno):
    if len(fields) < n[0] or len(fields) > n[1]:
        raise MappingError(f"expected '{form}', got {' '.join(fields)!r}", path=path, line=lineno)
