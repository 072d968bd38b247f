"""GROMACS .xtc through MDAnalysis' low-level ``XTCFile`` (the xdrfile C library; no decoding here).

Imported lazily: ``MDAnalysis.lib.formats.libmdaxdr`` is only loaded when an .xtc is actually used.
The end of the file is where the reader's byte offset reaches the file size; a read that fails before
that point is a truncated or corrupt frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TrajectoryError
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
                raise TrajectoryError(f"truncated file: {size - offset} byte(s) after the last complete "
                                      "frame, too few for a frame header",
                                      path=path, where=where) from None
            except OSError as exc:
                raise TrajectoryError(f"cannot read frame ({exc}); truncated or corrupt file?",
                                      path=path, where=where) from None
            x = np.asarray(raw.x, dtype=np.float64)
            check_count(len(x), n_atoms, path, where)
            frame = Frame(positions=x, box=np.asarray(raw.box, dtype=np.float64).reshape(3, 3),
                          time=float(raw.time), step=int(raw.step))
            check_frame(frame, path, where)
            index += 1
            yield frame


@register_writer(".xtc")
class XtcWriter(FrameWriter):
    """Writes .xtc frames (``precision`` 1000 = 0.001 nm, GROMACS' default)."""

    def __init__(self, path, atoms: AtomInfo, precision: float = 1000.0):
        self.precision = float(precision)
        super().__init__(path, atoms)

    def _open(self, tmp):
        self._fh = _xtcfile()(str(tmp), "w")

    def _write(self, frame: Frame):
        self._fh.write(np.asarray(frame.positions, dtype=np.float32),
                       np.asarray(frame.box, dtype=np.float32), int(frame.step), float(frame.time),
                       self.precision)

    def _close(self):
        self._fh.close()
