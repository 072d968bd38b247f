"""The format-neutral reading/writing entry points: the reader or writer comes from the extension.

Readers are generators that hold one frame at a time (constant memory per frame); writers are
``FrameWriter`` context managers that write through ``safe`` (temporary file, GROMACS-style backup).
The formats live in ``gro``, ``xtc`` and ``pdb``, which register themselves in ``base`` when imported here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from ..errors import TrajectoryError, TruncatedTrajectoryError
from . import safe
# importing a format module registers it; error messages list the formats in this order
from . import gro, xtc, pdb  # noqa: F401
from .base import (AtomInfo, Frame, FrameWriter, check_count, check_frame, read_formats, reader_for,  # noqa: F401
                   write_formats, writer_for)

log = logging.getLogger(__name__)

READ_FORMATS = read_formats()
WRITE_FORMATS = write_formats()


def read_frames(path, n_atoms: int | None = None, truncated_end: bool = False) -> Iterator[Frame]:
    """Iterate over the frames of a .gro, .xtc or .pdb file, one at a time.

    ``n_atoms`` (optional) is checked against every frame. Raises ``TrajectoryError`` naming the file and
    line (text formats) or frame (.xtc) for malformed input, a wrong atom count, NaN/inf coordinates, a
    zero or singular box, or an empty file. ``truncated_end``: a file that ends inside its last frame (a
    run killed while writing it) yields the complete frames before it, with a warning naming the frame;
    damage before the last frame is an error all the same."""
    path = Path(path)
    reader = reader_for(path)
    if not path.is_file():
        raise TrajectoryError("file not found" if not path.exists() else "not a regular file", path=path)
    frames = reader(path, n_atoms=n_atoms)
    return _until_truncated(frames, path) if truncated_end else frames


def read_selected(path, n_atoms: int | None = None, frames=None, truncated_end: bool = False):
    """(k, input index, frame) of the frames of ``path`` whose index is ``in frames`` (all when None), k
    counting the selected ones (``read_frames`` otherwise)."""
    k = 0
    for i, fr in enumerate(read_frames(path, n_atoms=n_atoms, truncated_end=truncated_end)):
        if frames is not None and i not in frames:
            continue
        yield k, i, fr
        k += 1


def _until_truncated(frames, path) -> Iterator[Frame]:
    try:
        yield from frames
    except TruncatedTrajectoryError as exc:
        if exc.frame == 0:
            raise
        log.warning("%s: the file ends inside frame %d (%s); using the %d complete frame(s) before it",
                    path, exc.frame, exc.message, exc.frame)


def read_frame(path, n_atoms: int | None = None) -> Frame:
    """The first frame of a file (a structure file such as -s AA.gro)."""
    for frame in read_frames(path, n_atoms=n_atoms):
        return frame
    raise TrajectoryError("no frames in file", path=path)


def count_frames(path, n_atoms: int | None = None) -> int:
    """Number of frames (reads the whole file, frame by frame)."""
    return sum(1 for _ in read_frames(path, n_atoms=n_atoms))


def open_writer(path, atoms: AtomInfo, **options) -> FrameWriter:
    """A ``FrameWriter`` for .gro, .xtc or .pdb chosen by extension. Fails early (before any work) when the
    format is unknown or the folder is not writable. Options go to the format's writer (e.g. ``precision``
    for .xtc, ``title`` for .gro)."""
    path = Path(path)
    writer = writer_for(path)
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
