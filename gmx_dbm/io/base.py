"""What every format module shares: ``Frame``, ``AtomInfo``, the ``FrameWriter`` base class, the frame
checks, and the table of readers and writers by file extension.

A format module (``gro``, ``pdb``, ``xtc``) imports only from here and registers itself::

    @register_reader(".gro")
    def read_gro(path, n_atoms=None): ...

    @register_writer(".gro")
    class GroWriter(FrameWriter): ...

``gmx_dbm.io.frames`` imports the format modules once and looks them up here; nothing in this module
imports a format module, so there is no import loop.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import OutputError, TrajectoryError
from ..geometry import box_problem
from . import safe

log = logging.getLogger(__name__)


@dataclass
class AtomInfo:
    """Atom labels for writing (and, from .gro/.pdb, reading): numpy arrays of length n.

    ``elements`` (optional) holds element symbols ('C', 'Cl', ...); formats with an element column
    (.pdb) write them, and guess from the names when they are None."""
    names: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray
    elements: np.ndarray | None = None

    def __post_init__(self):
        self.names = np.asarray(self.names, dtype=str)
        self.resnames = np.asarray(self.resnames, dtype=str)
        self.resids = np.asarray(self.resids, dtype=np.int64)
        if not len(self.names) == len(self.resnames) == len(self.resids):
            raise ValueError("AtomInfo arrays differ in length: "
                             f"{len(self.names)}, {len(self.resnames)}, {len(self.resids)}")
        if self.elements is not None:
            self.elements = np.asarray(self.elements, dtype=str)
            if len(self.elements) != len(self.names):
                raise ValueError(f"AtomInfo has {len(self.names)} names but {len(self.elements)} elements")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_topology(cls, flat) -> "AtomInfo":
        """From a ``FlatTopology`` (or anything with names/resnames/resids arrays, and optionally
        ``elements``)."""
        return cls(flat.names, flat.resnames, flat.resids, getattr(flat, "elements", None))


@dataclass
class Frame:
    """One configuration. positions (n, 3) float64 nm; box (3, 3) float64, rows = box vectors in nm;
    velocities (n, 3) nm/ps or None; atoms: labels when the file has them (.gro, .pdb), else None."""
    positions: np.ndarray
    box: np.ndarray
    time: float = 0.0
    step: int = 0
    velocities: np.ndarray | None = None
    atoms: AtomInfo | None = None
    title: str = ""

    @property
    def n_atoms(self) -> int:
        return len(self.positions)


def check_frame(frame: Frame, path, where: str, line: int | None = None) -> Frame:
    """Raise ``TrajectoryError`` for NaN/inf coordinates or a zero/singular box."""
    bad = ~np.isfinite(frame.positions).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise TrajectoryError(f"{int(bad.sum())} atom(s) have NaN or infinite coordinates "
                              f"(first: atom {first + 1}); expected finite numbers",
                              path=path, line=line, where=where)
    problem = box_problem(frame.box)
    if problem:
        raise TrajectoryError(problem, path=path, line=line, where=where)
    return frame


def check_names(frame: Frame, expected, path, index: int = 0, kind: str = "atom",
                source: str = "the topology") -> None:
    """Names of a frame that has them (.gro, .pdb) must be ``expected`` in order: a structure in another
    atom order would be read silently wrong. One rule for atoms (against the topology) and beads
    (against the mapping); frames without names (.xtc) pass."""
    if frame.atoms is None or not len(frame.atoms.names) or not len(expected):
        return
    got = np.asarray([str(n).strip() for n in frame.atoms.names])
    want = np.asarray([str(n).strip() for n in expected])
    if len(got) != len(want):
        return   # the count is checked (and reported) by the caller
    bad = np.flatnonzero(got != want)
    if len(bad):
        b = int(bad[0])
        raise TrajectoryError(f"{kind} {b + 1} is named {str(got[b])!r} but {source} expects {str(want[b])!r} ({len(bad)} of "
                              f"{len(want)} names differ): {kind}s must be in the order of {source}",
                              path=path, where=f"frame {index}")


def check_count(got: int, n_atoms: int | None, path, where: str, line: int | None = None) -> None:
    """Raise ``TrajectoryError`` when a frame's atom count differs from the expected one (if given)."""
    if n_atoms is not None and got != n_atoms:
        raise TrajectoryError(f"has {got} atoms, expected {n_atoms} (the topology/mapping's count)",
                              path=path, line=line, where=where)


# GROMACS writes the time and step of a frame into .gro titles and PDB remarks: "... t= 1.5 step= 3"
_TIME = re.compile(r"\bt=\s*([-+0-9.eE]+)")
_STEP = re.compile(r"\bstep=\s*([-+0-9]+)")
_TIME_STEP_TAIL = re.compile(r"\s*\bt=\s*[-+0-9.eE]+(\s+step=\s*[-+0-9]+)?\s*$")


def parse_title(title: str) -> tuple:
    """(title without the time/step tail, time or None, step or None) of a GROMACS title line."""
    time = step = None
    m = _TIME.search(title)
    if m:
        try:
            time = float(m.group(1))
        except ValueError:
            time = None
    m = _STEP.search(title)
    if m:
        step = int(m.group(1))
    return _TIME_STEP_TAIL.sub("", title).strip(), time, step


# ---------------------------------------------------------------------------------------- registry
# extension (lower case, with the dot) -> reader function / writer class, in registration order
_READERS: dict[str, Callable] = {}
_WRITERS: dict[str, type] = {}


def _extension(ext: str) -> str:
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


def register_reader(*extensions: str):
    """Decorator: ``reader(path, n_atoms=None)`` yields the ``Frame``s of files with these extensions."""
    def register(reader):
        for ext in extensions:
            _READERS[_extension(ext)] = reader
        return reader
    return register


def register_writer(*extensions: str):
    """Decorator: a ``FrameWriter`` subclass writes files with these extensions."""
    def register(writer):
        for ext in extensions:
            _WRITERS[_extension(ext)] = writer
        return writer
    return register


def read_formats() -> tuple:
    """Extensions that have a reader, in registration order."""
    return tuple(_READERS)


def write_formats() -> tuple:
    """Extensions that have a writer, in registration order."""
    return tuple(_WRITERS)


def reader_for(path) -> Callable:
    """The registered reader for ``path``'s extension; ``TrajectoryError`` listing the known ones."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise TrajectoryError(f"unknown trajectory format '{path.suffix}'; known: {', '.join(read_formats())}",
                              path=path)
    return reader


def writer_for(path) -> type:
    """The registered writer class for ``path``'s extension; ``OutputError`` listing the known ones."""
    path = Path(path)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise OutputError(f"{path}: unknown output format '{path.suffix}'; known: {', '.join(write_formats())}")
    return writer


# ---------------------------------------------------------------------------------------- writers
class FrameWriter:
    """Base of the format writers: ``with open_writer(path, atoms) as w: w.write(frame)``.

    Writes to a temporary file in the target folder; a clean ``close()`` backs up an existing target as
    ``#name.N#`` and moves the result into place; an exception inside the ``with`` block removes the
    temporary file. ``partial``: write to this file instead of a random temporary one (a resumable run
    names it, ``backmap.resume``); ``append_at``: continue that file after its first ``append_at`` bytes
    (``n_frames`` frames), dropping anything after them. ``flush()`` makes every frame written so far
    durable and returns the file's size. Subclasses implement ``_open(tmp, mode)`` (mode 'w' or 'a'),
    ``_write(frame)``, ``_flush()`` and ``_close()``."""

    def __init__(self, path, atoms: AtomInfo, *, partial=None, append_at: int | None = None, n_frames: int = 0):
        self.path = Path(path)
        self.atoms = atoms
        self.n_frames = int(n_frames) if append_at is not None else 0
        if partial is None:
            self._tmp = safe.temporary_path(self.path)
        else:
            self._tmp = Path(partial)
            if append_at is None:
                self._tmp.write_bytes(b"")
            else:
                with open(self._tmp, "r+b") as fh:
                    fh.truncate(int(append_at))
        self._done = False
        try:
            self._open(self._tmp, "w" if append_at is None else "a")
        except BaseException:
            safe.discard(self._tmp)
            raise

    def flush(self) -> int:
        """Everything written so far on disk (fsync); returns the file's size in bytes."""
        self._flush()
        return self._tmp.stat().st_size

    def write(self, frame: Frame) -> None:
        if self._done:
            raise OutputError(f"{self.path}: writer already closed")
        if frame.n_atoms != len(self.atoms):
            raise TrajectoryError(f"frame has {frame.n_atoms} atoms but the writer's atoms are "
                                  f"{len(self.atoms)}", path=self.path, where=f"frame {self.n_frames}")
        self._write(frame)
        self.n_frames += 1

    def close(self) -> None:
        """Finish: move the file into place (backing up an existing one)."""
        if self._done:
            return
        self._done = True
        try:
            self._close()
            safe.commit(self._tmp, self.path)
        except BaseException:
            safe.discard(self._tmp)
            raise
        log.debug("wrote %d frame(s) to %s", self.n_frames, self.path)

    def abort(self) -> None:
        """Give up: remove the temporary file, leave any existing target untouched."""
        if self._done:
            return
        self._done = True
        try:
            self._close()
        finally:
            safe.discard(self._tmp)

    def detach(self) -> None:
        """Stop writing and keep the file as it is (a named ``partial`` file, to be continued later)."""
        if self._done:
            return
        self._done = True
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        # a writer dropped without close() must not leave its temporary file behind
        if not getattr(self, "_done", True):
            try:
                self.abort()
            except Exception:
                pass

    # subclass hooks
    def _open(self, tmp: Path, mode: str) -> None:
        raise NotImplementedError

    def _write(self, frame: Frame) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        fh = self._fh
        fh.flush()
        os.fsync(fh.fileno())

    def _close(self) -> None:
        raise NotImplementedError
