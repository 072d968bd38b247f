"""Frames, atom labels, and the format-neutral reading/writing entry points.

Readers are generators that hold one frame at a time (constant memory per frame); writers are
``FrameWriter`` context managers that write through ``safe`` (temporary file, GROMACS-style backup).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import OutputError, TrajectoryError
from ..geometry import box_problem
from . import safe

log = logging.getLogger(__name__)


@dataclass
class AtomInfo:
    """Atom labels for writing (and, from .gro/.pdb, reading): numpy arrays of length n."""
    names: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray

    def __post_init__(self):
        self.names = np.asarray(self.names, dtype=str)
        self.resnames = np.asarray(self.resnames, dtype=str)
        self.resids = np.asarray(self.resids, dtype=np.int64)
        if not len(self.names) == len(self.resnames) == len(self.resids):
            raise ValueError("AtomInfo arrays differ in length: "
                             f"{len(self.names)}, {len(self.resnames)}, {len(self.resids)}")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_topology(cls, flat) -> "AtomInfo":
        """From a ``FlatTopology`` (or anything with names/resnames/resids arrays)."""
        return cls(flat.names, flat.resnames, flat.resids)


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


def check_count(got: int, n_atoms: int | None, path, where: str, line: int | None = None) -> None:
    if n_atoms is not None and got != n_atoms:
        raise TrajectoryError(f"has {got} atoms, expected {n_atoms} (the topology/mapping's count)",
                              path=path, line=line, where=where)


# ---------------------------------------------------------------------------------------- registry
def _readers() -> dict:
    from . import gro, pdb, xtc
    return {".gro": gro.read_gro, ".xtc": xtc.read_xtc, ".pdb": pdb.read_pdb}


def _writers() -> dict:
    from . import gro, pdb, xtc
    return {".gro": gro.GroWriter, ".xtc": xtc.XtcWriter, ".pdb": pdb.PdbWriter}


READ_FORMATS = (".gro", ".xtc", ".pdb")
WRITE_FORMATS = (".gro", ".xtc", ".pdb")


def read_frames(path, n_atoms: int | None = None) -> Iterator[Frame]:
    """Iterate over the frames of a .gro, .xtc or .pdb file, one at a time.

    ``n_atoms`` (optional) is checked against every frame. Raises ``TrajectoryError`` naming the file and
    line (text formats) or frame (.xtc) for malformed input, a wrong atom count, NaN/inf coordinates, a
    zero or singular box, or an empty file."""
    path = Path(path)
    reader = _readers().get(path.suffix.lower())
    if reader is None:
        raise TrajectoryError(f"unknown trajectory format '{path.suffix}'; known: {', '.join(READ_FORMATS)}",
                              path=path)
    if not path.is_file():
        raise TrajectoryError("file not found" if not path.exists() else "not a regular file", path=path)
    return reader(path, n_atoms=n_atoms)


def read_frame(path, n_atoms: int | None = None) -> Frame:
    """The first frame of a file (a structure file such as -s AA.gro)."""
    for frame in read_frames(path, n_atoms=n_atoms):
        return frame
    raise TrajectoryError("no frames in file", path=path)


def count_frames(path, n_atoms: int | None = None) -> int:
    """Number of frames (reads the whole file, frame by frame)."""
    return sum(1 for _ in read_frames(path, n_atoms=n_atoms))


class FrameWriter:
    """Base of the format writers: ``with open_writer(path, atoms) as w: w.write(frame)``.

    Writes to a temporary file in the target folder; a clean ``close()`` backs up an existing target as
    ``#name.N#`` and moves the result into place; an exception inside the ``with`` block removes the
    temporary file. Subclasses implement ``_open(tmp)``, ``_write(frame)`` and ``_close()``."""

    def __init__(self, path, atoms: AtomInfo):
        self.path = Path(path)
        self.atoms = atoms
        self.n_frames = 0
        self._tmp = safe.temporary_path(self.path)
        self._done = False
        try:
            self._open(self._tmp)
        except BaseException:
            safe.discard(self._tmp)
            raise

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
    def _open(self, tmp: Path) -> None:
        raise NotImplementedError

    def _write(self, frame: Frame) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def open_writer(path, atoms: AtomInfo, **options) -> FrameWriter:
    """A ``FrameWriter`` for .gro, .xtc or .pdb chosen by extension. Fails early (before any work) when the
    format is unknown or the folder is not writable. Options go to the format's writer (e.g. ``precision``
    for .xtc, ``title`` for .gro)."""
    path = Path(path)
    writer = _writers().get(path.suffix.lower())
    if writer is None:
        raise OutputError(f"{path}: unknown output format '{path.suffix}'; known: {', '.join(WRITE_FORMATS)}")
    safe.check_writable(path)
    if not isinstance(atoms, AtomInfo):
        atoms = AtomInfo(*atoms)
    return writer(path, atoms, **options)


def write_frames(path, atoms: AtomInfo, frames, **options) -> int:
    """Write an iterable of frames; returns the number written."""
    with open_writer(path, atoms, **options) as w:
        for frame in frames:
            w.write(frame)
    return w.n_frames
