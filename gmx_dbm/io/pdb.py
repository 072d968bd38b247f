"""PDB: writer (CRYST1 box, MODEL per frame, hybrid-36 numbers past 99999 atoms / 9999 residues) and a
simple reader for what the writer and GROMACS produce (ATOM/HETATM, CRYST1, MODEL/ENDMDL). Ångström in
the file, nm in memory. The element column (77-78) is written from ``AtomInfo.elements``, which
``AtomInfo.from_topology`` fills by the rule of ``gmx_dbm.elements``; without elements (labels read from
a .gro, CG beads) it stays blank, as MDAnalysis and GROMACS leave it: a name alone does not tell 'CA'
(C-alpha) from calcium."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TrajectoryError
from ..geometry import box_from_lengths_angles, box_lengths_angles
from .base import (AtomInfo, Frame, FrameWriter, check_count, check_frame, parse_title, register_reader,
                   register_writer)

_UPPER = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "0123456789abcdefghijklmnopqrstuvwxyz"


def _encode_pure(digits: str, value: int) -> str:
    out = []
    while True:
        value, rest = divmod(value, len(digits))
        out.append(digits[rest])
        if value == 0:
            return "".join(reversed(out))


def hy36encode(width: int, value: int) -> str:
    """Hybrid-36 (the PDB community's extension): decimal up to 10**width - 1, then base 36 with upper
    case letters first, then lower case."""
    i = int(value)
    if i >= 1 - 10 ** (width - 1):
        if i < 10 ** width:
            return f"{i:{width}d}"
        i -= 10 ** width
        block = 26 * 36 ** (width - 1)
        if i < block:
            return _encode_pure(_UPPER, i + 10 * 36 ** (width - 1))
        i -= block
        if i < block:
            return _encode_pure(_LOWER, i + 10 * 36 ** (width - 1))
    raise ValueError(f"{value} does not fit hybrid-36 with width {width}")


def hy36decode(width: int, text: str) -> int:
    s = text.strip()
    if not s:
        raise ValueError("blank number")
    if s[0] in "-0123456789":
        return int(s)
    if s[0].isupper():
        return int(s, 36) - 10 * 36 ** (width - 1) + 10 ** width
    return int(s, 36) - 10 * 36 ** (width - 1) + 10 ** width + 26 * 36 ** (width - 1)


def _pdb_name(name: str) -> str:
    # PDB convention: names shorter than 4 characters start in column 14
    return f" {name:<3s}" if len(name) < 4 else name[:4]


def _element_column(symbol: str) -> str:
    # PDB writes element symbols in capitals, right-justified; an unknown element ('X') stays blank
    symbol = str(symbol).strip()
    return "" if symbol in ("", "X") else symbol.upper()


@register_writer(".pdb")
class PdbWriter(FrameWriter):
    """One MODEL per frame, CRYST1 from the box."""

    def __init__(self, path, atoms: AtomInfo, title: str = "gmx_dbm", **partial):
        self.title = title
        super().__init__(path, atoms, **partial)

    def _open(self, tmp, mode):
        self._fh = open(tmp, mode)
        a = self.atoms
        self._labels = []
        for i, (r, rn, n) in enumerate(zip(a.resids, a.resnames, a.names)):
            serial = hy36encode(5, (i + 1) % (10 ** 5 + 2 * 26 * 36 ** 4))
            resid = hy36encode(4, int(r) % (10 ** 4 + 2 * 26 * 36 ** 3))
            self._labels.append(f"ATOM  {serial:>5s} {_pdb_name(str(n))} {str(rn)[:4]:<4s} {resid:>4s}    ")
        self._elements = [""] * len(a) if a.elements is None else [_element_column(e) for e in a.elements]
        self._fh.write(f"TITLE     {self.title}\n")

    def _write(self, frame: Frame):
        (la, lb, lc), (al, be, ga) = box_lengths_angles(frame.box)
        out = [f"REMARK    t= {frame.time:.5f} step= {frame.step}\n",
               f"CRYST1{la * 10:9.3f}{lb * 10:9.3f}{lc * 10:9.3f}{al:7.2f}{be:7.2f}{ga:7.2f} P 1           1\n",
               f"MODEL     {self.n_frames + 1:4d}\n"]
        xyz = frame.positions * 10.0
        for label, (x, y, z), element in zip(self._labels, xyz, self._elements):
            out.append(f"{label}{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2s}\n")
        out.append("TER\nENDMDL\n")
        self._fh.write("".join(out))

    def _close(self):
        self._fh.write("END\n")
        self._fh.close()


@register_reader(".pdb")
def read_pdb(path, n_atoms: int | None = None):
    """Yield the models of a PDB file (ATOM/HETATM records; CRYST1 gives the box). Atom labels carry the
    element column when every atom of the model has one."""
    path = Path(path)
    box = np.zeros((3, 3))
    time, step = 0.0, 0
    rows, names, resnames, resids, elements = [], [], [], [], []
    nframe = 0
    last_line = 0

    def finish(lineno):
        nonlocal rows, names, resnames, resids, elements, nframe
        where = f"frame {nframe}"
        check_count(len(rows), n_atoms, path, where, line=lineno)
        known = elements if all(elements) else None
        frame = Frame(positions=np.asarray(rows, dtype=np.float64).reshape(-1, 3) / 10.0, box=box.copy(),
                      atoms=AtomInfo(names, resnames, resids, known), time=time, step=step)
        check_frame(frame, path, where, line=lineno)
        rows, names, resnames, resids, elements = [], [], [], [], []
        nframe += 1
        return frame

    with open(path, "r", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            last_line = lineno
            rec = line[:6]
            if rec in ("REMARK", "TITLE ") and " t= " in line:
                # the frame's time: gmx_dbm writes it in a REMARK, GROMACS in the TITLE
                _, t, s = parse_title(line[6:])
                time, step = t or 0.0, s or 0
            elif rec == "CRYST1":
                try:
                    lengths = [float(line[6:15]) / 10, float(line[15:24]) / 10, float(line[24:33]) / 10]
                    angles = [float(line[33:40]), float(line[40:47]), float(line[47:54])]
                except ValueError:
                    raise TrajectoryError("expected CRYST1 a b c (Å) alpha beta gamma (degrees) in fixed "
                                          f"columns, got {line.rstrip()!r}", path=path, line=lineno) from None
                box = box_from_lengths_angles(lengths, angles)
            elif rec in ("ATOM  ", "HETATM"):
                try:
                    xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
                except ValueError:
                    raise TrajectoryError(f"expected x y z in columns 31-54, got {line[30:54]!r}",
                                          path=path, line=lineno) from None
                rows.append(xyz)
                elements.append(line[76:78].strip().capitalize())
                names.append(line[12:16].strip())
                resnames.append(line[17:21].strip())
                try:
                    resids.append(hy36decode(4, line[22:26]))
                except ValueError:
                    raise TrajectoryError(f"expected a residue number in columns 23-26, got {line[22:26]!r}",
                                          path=path, line=lineno) from None
            elif rec in ("ENDMDL", "END   ", "END\n", "END") and rows:
                yield finish(lineno)
        if rows:
            yield finish(last_line)
        elif nframe == 0:
            raise TrajectoryError("no ATOM/HETATM records; expected at least one model", path=path,
                                  line=max(last_line, 1))
