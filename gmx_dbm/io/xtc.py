"""GROMACS .xtc through MDAnalysis' low-level ``XTCFile`` (the xdrfile C library; no decoding here).

Imported lazily: ``MDAnalysis.lib.formats.libmdaxdr`` is only loaded when an .xtc is actually used.
The end of the file is where the reader's byte offset reaches the file size; a read that fails before
that point is a truncated or corrupt frame.
"""
from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..errors import TrajectoryError, TruncatedTrajectoryError
from .base import AtomInfo, Frame, FrameWriter, check_count, check_frame, register_reader, register_writer


def _xtcfile():
    from MDAnalysis.lib.formats.libmdaxdr import XTCFile
    return XTCFile


@register_reader(".xtc")
def read_xtc(path, n_atoms: int | None = None):
    """Yield the frames of an .xtc file, one at a time (velocities and atom labels: none)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise TrajectoryError("empty file; expected XTC frames", path=path, where="frame 0")
    XTCFile = _xtcfile()
    try:
        fh = XTCFile(str(path), "r")
    except OSError as exc:
        raise TrajectoryError(f"not a readable XTC file ({exc})", path=path, where="frame 0") from None
    with fh:
        check_count(fh.n_atoms, n_atoms, path, "frame 0")
        index = 0
        while True:
            offset = fh._bytes_tell()   # xdr_tell: bytes consumed by the frames read so far
            if offset >= size:
                return
            where = f"frame {index}"
            try:
                raw = fh.read()
            except (StopIteration, EOFError):
                # xdrfile reports end-of-file when not even a frame header is left, here with bytes remaining
                raise TruncatedTrajectoryError(f"truncated file: {size - offset} byte(s) after the last "
                                               "complete frame, too few for a frame header",
                                               path=path, where=where, frame=index) from None
            except OSError as exc:
                if not _frame_after(path, offset, fh.n_atoms):
                    raise TruncatedTrajectoryError(f"truncated file: the last {size - offset} byte(s) hold an "
                                                   f"incomplete frame ({exc})", path=path, where=where,
                                                   frame=index) from None
                raise TrajectoryError(f"cannot read frame ({exc}); corrupt file (complete frames follow)",
                                      path=path, where=where) from None
            x = np.asarray(raw.x, dtype=np.float64)
            check_count(len(x), n_atoms, path, where)
            frame = Frame(positions=x, box=np.asarray(raw.box, dtype=np.float64).reshape(3, 3),
                          time=float(raw.time), step=int(raw.step))
            check_frame(frame, path, where)
            index += 1
            yield frame


def _frame_after(path, offset: int, n_atoms: int) -> bool:
    """Whether an XTC frame header (magic 1995, then the atom count, big-endian) starts after ``offset``:
    then the damage at ``offset`` is not the end of a truncated file."""
    header = struct.pack(">ii", 1995, int(n_atoms))
    with open(path, "rb") as fh:
        fh.seek(offset + 1)
        tail = b""
        while True:
            block = fh.read(1 << 20)
            if not block:
                return False
            if header in tail[-7:] + block:
                return True
            tail = block


@register_writer(".xtc")
class XtcWriter(FrameWriter):
    """Writes .xtc frames (``precision`` 1000 = 0.001 nm, GROMACS' default). XTC frames are
    self-contained records, so each is encoded on its own (xdrfile into a scratch file) and appended to
    the output through an ordinary file handle, which can be flushed after every frame and reopened for
    appending (xdrfile offers neither)."""

    def __init__(self, path, atoms: AtomInfo, precision: float = 1000.0, **partial):
        self.precision = float(precision)
        super().__init__(path, atoms, **partial)

    def _open(self, tmp, mode):
        self._fh = open(tmp, mode + "b")
        self._scratch = Path(tempfile.mkdtemp(prefix="gmx_dbm_xtc_")) / "frame.xtc"

    def _write(self, frame: Frame):
        fh = _xtcfile()(str(self._scratch), "w")
        with fh:
            fh.write(np.asarray(frame.positions, dtype=np.float32), np.asarray(frame.box, dtype=np.float32),
                     int(frame.step), float(frame.time), self.precision)
        self._fh.write(self._scratch.read_bytes())

    def _close(self):
        self._fh.close()
        shutil.rmtree(self._scratch.parent, ignore_errors=True)
