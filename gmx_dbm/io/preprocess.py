"""The C preprocessor for GROMACS topologies, with the file and line of every line it gives.

ParmEd's ``CPreProcessor`` handles the directives (``#include``, ``#define``, ``#ifdef``/``#ifndef``/
``#else``/``#endif``, ``#undef``); the subclass here only remembers where each line came from, names the
including file and line when an ``#include`` is not found, and turns a non-UTF-8 file into a
``TopologyError`` at its first bad line. ``preprocess`` strips comments, joins continuation lines and
drops empty ones. No torch.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

from ..errors import TopologyError


class Line:
    """One preprocessed topology line and where it came from (for error messages)."""
    __slots__ = ("path", "lineno", "text")

    def __init__(self, path, lineno, text):
        self.path, self.lineno, self.text = path, lineno, text

    def error(self, message, where=None) -> TopologyError:
        return TopologyError(message, path=self.path, line=self.lineno, where=where)


def tracked_preprocessor():
    """A subclass of ParmEd's CPreProcessor that yields (path, lineno, text) and names the including
    file and line when an #include cannot be found. Directive handling stays ParmEd's. (Built on first
    use so that ParmEd is imported only when a topology is read.)"""
    from parmed.exceptions import PreProcessorError
    from parmed.gromacs._cpp import CPreProcessor, _replace_defines, ppre

    class Tracked(CPreProcessor):
        def __iter__(self):
            opened = []  # lines of the #if/#ifdef/#ifndef still open, to name in an error
            for lineno, line in _text_lines(self._fileobj, self.filename):
                match = ppre.match(line)
                if match:
                    cmd, args = match.groups()
                    depth = len(self._ifstack)
                    try:
                        self._ppcmdmap[cmd](self, args or "")
                    except (PreProcessorError, NotImplementedError) as exc:
                        raise TopologyError(_pp_message(exc, self), path=self.filename, line=lineno) from None
                    if len(self._ifstack) > depth:
                        opened.append(lineno)
                    elif len(self._ifstack) < depth and opened:
                        opened.pop()
                    if self._includefile is not None:
                        inc = self._includefile
                        yield from inc
                        inc.close()
                        self.defines = inc.defines
                        self._includefile = None
                    continue
                if self._satisfiedstack and not self._satisfiedstack[-1]:
                    continue
                yield self.filename, lineno, _replace_defines(line, self.defines)
            if self._ifstack:
                raise TopologyError("unterminated #if/#ifdef: file ends without the matching #endif",
                                    path=self.filename, line=opened[-1] if opened else None)

        def _pp_include_tracked(self, args):
            CPreProcessor._ppcmdmap["include"](self, args)
            if self._includefile is not None:   # reopen the found file with line tracking
                found = self._includefile.filename
                self._includefile.close()
                self._includefile = Tracked(found, defines=self.defines, includes=self._includes,
                                            notfound_fatal=True)

        _ppcmdmap = dict(CPreProcessor._ppcmdmap, include=_pp_include_tracked)

    return Tracked


def _text_lines(fileobj, path):
    """enumerate(fileobj, 1), but a file that is not UTF-8 text is a TopologyError at its first bad line."""
    try:
        yield from enumerate(fileobj, 1)
    except UnicodeDecodeError:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise TopologyError(f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                                        "expected a GROMACS topology (.top/.itp text)", path=path,
                                        line=lineno) from None
        raise


def _pp_message(exc, pp) -> str:
    text = str(exc)
    if text.startswith("Could not find"):
        name = text[len("Could not find"):].strip()
        dirs = ", ".join(dict.fromkeys(pp._includes))
        return f"#include file '{name}' not found (searched: {dirs})"
    return f"preprocessor: {text}"


def preprocess(path, defines=None, include_dirs=None) -> list:
    """Preprocessed, comment-free, non-empty lines of a topology as ``Line``s (with file and line).

    #include folders: ``include_dirs``, the topology's own folder (ParmEd's rule) and GROMACS'
    share/gromacs/top of the found gmx."""
    path = Path(path)
    if not path.is_file():
        raise TopologyError("topology file not found", path=str(path))
    incs = [str(Path(d)) for d in (include_dirs or [])]
    from ..gromacs import gmx_topology_dir
    top = gmx_topology_dir()
    if top is not None and str(top) not in incs:
        incs.append(str(top))
    defs = OrderedDict()
    for key, value in (defines or {}).items():
        defs[key] = "1" if value is None else str(value)
    Tracked = tracked_preprocessor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp = Tracked(str(path), defines=defs, includes=incs, notfound_fatal=True)
        out = []
        pending = None
        for fname, lineno, text in pp:
            text = text.split(";", 1)[0].rstrip()
            if pending is not None:   # line continuation with a trailing backslash
                text = pending.text + " " + text
                lineno = pending.lineno
                pending = None
            if text.endswith("\\"):
                pending = Line(fname, lineno, text[:-1])
                continue
            if text.strip():
                out.append(Line(fname, lineno, text.strip()))
        pp.close()
    return out


def parse_defines(items) -> dict:
    """['POSRES', 'FC=1000'] (as given to -D) -> {'POSRES': '1', 'FC': '1000'}."""
    out = OrderedDict()
    for item in items or []:
        item = item[2:] if item.startswith("-D") else item
        key, _, value = item.partition("=")
        if not key:
            raise TopologyError(f"empty define '{item}'")
        out[key] = value or "1"
    return out
