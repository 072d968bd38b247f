"""GROMACS .xtc through MDAnalysis' low-level ``XTCFile`` (the xdrfile C library; no decoding here).

Imported lazily: ``MDAnalysis.lib.formats.libmdaxdr`` is only loaded when an .xtc is actually used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TrajectoryError
from .frames import AtomInfo, Frame, FrameWriter, check_count, check_frame


def _xtcfile():
    from MDAnalysis.lib.formats.libmdaxdr import XTCFile
    return XTCFile


def read_xtc(path, n_atoms: int | None = None):
    """Yield the frames of an .xtc file, one at a time (velocities and atom labels: none)."""
    path = Path(path)
    if path.stat().st_size == 0:
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
            try:
                raw = fh.read()
            except EOFError:
                return
            except StopIteration:  # some MDAnalysis versions end iteration this way
                return
            except OSError as exc:
                if "endoffile" in str(exc).lower().replace(" ", "") and index > 0:
                    return
                raise TrajectoryError(f"cannot read frame ({exc}); truncated or corrupt file?",
                                      path=path, where=f"frame {index}") from None
            x = np.asarray(raw.x, dtype=np.float64)
            check_count(len(x), n_atoms, path, f"frame {index}")
            frame = Frame(positions=x, box=np.asarray(raw.box, dtype=np.float64).reshape(3, 3),
                          time=float(raw.time), step=int(raw.step))
            check_frame(frame, path, f"frame {index}")
            index += 1
            yield frame


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
