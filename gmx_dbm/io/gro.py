"""GROMACS .gro: multi-frame, fixed columns, triclinic boxes, optional velocities.

Reading follows GROMACS (``groio.cpp``): residue number in columns 1-5, residue name 6-10, atom name
11-15, atom number 16-20 (ignored: it wraps at 100000), then coordinates from column 21 in fields whose
width is inferred from the distance between the decimal points of the first atom line of each frame
("variable precision" .gro), velocities (if present) in three more fields of the same width. The box
line has 3 or 9 numbers (see ``gmx_dbm.geometry``). Titles may carry ``t= <time>`` and ``step= <n>``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import TrajectoryError, TruncatedTrajectoryError
from ..geometry import box_from_gro_values, box_to_gro_values
from .base import (AtomInfo, Frame, FrameWriter, check_count, check_frame, parse_title, register_reader,
                   register_writer)


def _field_width(line: str, path, lineno: int) -> int:
    """GROMACS' rule: the width of a coordinate field is the distance between the first two decimal
    points; the third must be at the same distance."""
    p1 = line.find(".", 20)
    p2 = line.find(".", p1 + 1) if p1 >= 0 else -1
    p3 = line.find(".", p2 + 1) if p2 >= 0 else -1
    if p1 < 0 or p2 < 0 or p3 < 0:
        raise TrajectoryError("expected three coordinates with decimal points from column 21 "
                              f"(fixed .gro format), got {line.rstrip()!r}", path=path, line=lineno)
    width = p2 - p1
    if p3 - p2 != width or width < 4:
        raise TrajectoryError("the decimal points of x, y and z are not evenly spaced (fixed .gro format "
                              f"needs equal field widths), got {line.rstrip()!r}", path=path, line=lineno)
    return width


@register_reader(".gro")
def read_gro(path, n_atoms: int | None = None):
    """Yield the frames of a .gro file (one frame in memory at a time)."""
    path = Path(path)
    with open(path, "r", errors="replace") as fh:
        lineno = 0
        nframe = 0
        while True:
            title = fh.readline()
            lineno += 1
            if title == "":
                if nframe == 0:
                    raise TrajectoryError("empty file; expected a title line, the number of atoms, atom "
                                          "lines and a box line", path=path, line=1)
                return
            if title.strip() == "" and nframe > 0:
                # trailing blank lines after the last frame are harmless
                rest = fh.read()
                if rest.strip():
                    raise TrajectoryError("expected a title line of the next frame, got a blank line",
                                          path=path, line=lineno)
                return
            count_line = fh.readline()
            lineno += 1
            if count_line == "" or (not count_line.endswith("\n") and not count_line.strip().isdigit()):
                raise TruncatedTrajectoryError("file ends after the title; expected the number of atoms",
                                               path=path, line=lineno, frame=nframe)
            try:
                natoms = int(count_line.strip())
                if natoms < 0:
                    raise ValueError
            except ValueError:
                raise TrajectoryError(f"expected the number of atoms (an integer), got {count_line.strip()!r}",
                                      path=path, line=lineno) from None
            where = f"frame {nframe}"
            check_count(natoms, n_atoms, path, where, line=lineno)
            frame = _read_atoms(fh, path, lineno, natoms, title.rstrip("\n"), nframe)
            lineno += natoms
            box_line = fh.readline()
            lineno += 1
            if box_line == "":
                raise TruncatedTrajectoryError(f"file ends after {natoms} atom lines; expected the box line "
                                               "(3 or 9 numbers)", path=path, line=lineno, frame=nframe)
            if not box_line.endswith("\n") and len(box_line.rstrip()) % 10:
                # GROMACS writes %10.5f box fields: a last line of another length was cut inside a field
                raise TruncatedTrajectoryError(f"file ends inside the box line ({box_line.rstrip()!r})",
                                               path=path, line=lineno, frame=nframe)
            try:
                frame.box = box_from_gro_values(box_line.split())
            except ValueError:
                if not box_line.endswith("\n"):
                    raise TruncatedTrajectoryError(f"file ends inside the box line ({box_line.rstrip()!r})",
                                                   path=path, line=lineno, frame=nframe) from None
                raise TrajectoryError(f"expected the box line (3 or 9 numbers) after {natoms} atoms, got "
                                      f"{box_line.rstrip()!r}; is the atom count on line {lineno - natoms - 1} "
                                      "right?", path=path, line=lineno) from None
            check_frame(frame, path, where, line=lineno)
            nframe += 1
            yield frame


def _read_atoms(fh, path, count_lineno: int, natoms: int, title: str, nframe: int = 0) -> Frame:
    pos = np.empty((natoms, 3))
    vel = None
    names = np.empty(natoms, dtype=object)
    resnames = np.empty(natoms, dtype=object)
    resids = np.empty(natoms, dtype=np.int64)
    width = 8
    has_vel = False
    for i in range(natoms):
        line = fh.readline()
        lineno = count_lineno + 1 + i
        if not line.endswith("\n"):
            # the file ends inside the frame (the box line must still follow)
            raise TruncatedTrajectoryError(f"file ends after {i} of {natoms} atom lines (truncated file or "
                                           f"wrong atom count on line {count_lineno})", path=path, line=lineno,
                                           frame=nframe)
        if i == 0:
            width = _field_width(line, path, lineno)
            # velocities: three more fields of the same width after the coordinates
            has_vel = len(line.rstrip()) >= 20 + 6 * width
            if has_vel:
                vel = np.zeros((natoms, 3))
        try:
            resids[i] = int(line[0:5])
        except ValueError:
            raise TrajectoryError(f"expected a residue number in columns 1-5, got {line[0:5]!r}",
                                  path=path, line=lineno) from None
        resnames[i] = line[5:10].strip()
        names[i] = line[10:15].strip()
        for k in range(3):
            a = 20 + k * width
            text = line[a:a + width]
            try:
                pos[i, k] = float(text)
            except ValueError:
                raise TrajectoryError(f"expected a number for {'xyz'[k]} in columns {a + 1}-{a + width}, got "
                                      f"{text.strip()!r}", path=path, line=lineno) from None
            if not math.isfinite(pos[i, k]):
                raise TrajectoryError(f"NaN or infinite {'xyz'[k]} coordinate ({text.strip()!r}); expected a "
                                      "finite number", path=path, line=lineno)
        if vel is not None:
            try:
                for k in range(3):
                    a = 20 + (3 + k) * width
                    vel[i, k] = float(line[a:a + width])
            except ValueError:
                vel = None  # as GROMACS: a line without velocities means the frame has none
    clean_title, time, step = parse_title(title)
    return Frame(positions=pos, box=np.zeros((3, 3)), time=time or 0.0, step=step or 0,
                 velocities=vel if has_vel else None,
                 atoms=AtomInfo(names.astype(str), resnames.astype(str), resids), title=clean_title)


@register_writer(".gro")
class GroWriter(FrameWriter):
    """Writes .gro frames in GROMACS' format (%8.3f coordinates, %8.4f velocities by default); atom and
    residue numbers wrap at 100000 as GROMACS writes them."""

    def __init__(self, path, atoms: AtomInfo, title: str = "gmx_dbm", precision: int = 3, **partial):
        self.title = title
        self.precision = int(precision)
        super().__init__(path, atoms, **partial)

    def _open(self, tmp, mode):
        self._fh = open(tmp, mode)
        a = self.atoms
        # the label part of each line does not change between frames
        self._labels = [f"{int(r) % 100000:5d}{str(rn)[:5]:<5s}{str(n)[:5]:>5s}{(i + 1) % 100000:5d}"
                        for i, (r, rn, n) in enumerate(zip(a.resids, a.resnames, a.names))]

    def _write(self, frame: Frame):
        p = self.precision
        w = p + 5
        limit = 10.0 ** (w - p - 2)  # largest magnitude that fits the field with its sign
        if np.abs(frame.positions).max(initial=0.0) >= limit:
            raise TrajectoryError(f"coordinates beyond +-{limit:g} nm do not fit .gro's %{w}.{p}f columns",
                                  path=self.path, where=f"frame {self.n_frames}")
        title = frame.title or self.title
        out = [f"{title} t= {frame.time:.5f} step= {frame.step}\n", f"{frame.n_atoms:5d}\n"]
        fmt = f"%{w}.{p}f%{w}.{p}f%{w}.{p}f"
        if frame.velocities is not None:
            fmt += f"%{w}.{p + 1}f%{w}.{p + 1}f%{w}.{p + 1}f"
            data = np.hstack([frame.positions, frame.velocities])
        else:
            data = frame.positions
        for label, row in zip(self._labels, data):
            out.append(label + fmt % tuple(row) + "\n")
        out.append("".join(f"{v:10.5f}" for v in box_to_gro_values(frame.box)) + "\n")
        self._fh.write("".join(out))

    def _close(self):
        self._fh.close()
