"""Trajectory readers/writers: a round-trip contract that every format's writer and reader pass, a
reading contract for files written by MDAnalysis and by GROMACS (one subclass per format and program),
bad-input cases (each error names the file and the line or frame), the PDB element column, and safe
(atomic, backed-up) output."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.errors import OutputError, TrajectoryError
from gmx_dbm.geometry import box_lengths_angles
from gmx_dbm.io import (AtomInfo, Frame, atomic_output, check_writable, count_frames, open_writer, read_frame,
                        read_frames, write_frames)

DATA = Path(__file__).parent / "data"
TRICLINIC = np.array([[3.0, 0.0, 0.0], [0.5, 2.8, 0.0], [-0.3, 0.4, 2.6]])


def atoms_for(n):
    return AtomInfo([f"C{i % 7 + 1}" for i in range(n)], ["MOL"] * n, np.arange(n) // 3 + 1)


def frames_for(n, count=3, box=TRICLINIC, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(positions=rng.uniform(0, 2.5, (n, 3)), box=np.array(box, dtype=float), time=10.0 * k,
                  step=100 * k) for k in range(count)]


class ReaderContract:
    """Every format's tests subclass this and set ``ext``, ``tol`` (nm) and ``has_labels``."""
    ext = None
    tol = None
    has_labels = False
    box_tol = 1e-5

    def write(self, path, frames, atoms):
        with open_writer(path, atoms) as w:
            for f in frames:
                w.write(f)
        return path

    def test_round_trip_multi_frame_triclinic(self, tmp_path):
        atoms = atoms_for(50)
        frames = frames_for(50)
        path = self.write(tmp_path / f"t{self.ext}", frames, atoms)
        got = list(read_frames(path, n_atoms=50))
        assert len(got) == 3
        for a, b in zip(frames, got):
            assert b.positions.shape == (50, 3) and b.positions.dtype == np.float64
            np.testing.assert_allclose(b.positions, a.positions, atol=self.tol)
            np.testing.assert_allclose(b.box, a.box, atol=self.box_tol)
        if self.has_labels:
            assert got[0].atoms.names.tolist() == atoms.names.tolist()
            assert got[0].atoms.resnames.tolist() == atoms.resnames.tolist()
            assert got[0].atoms.resids.tolist() == atoms.resids.tolist()
        assert count_frames(path) == 3

    def test_time_and_step(self, tmp_path):
        path = self.write(tmp_path / f"t{self.ext}", frames_for(5), atoms_for(5))
        got = list(read_frames(path))
        assert [f.time for f in got] == pytest.approx([0.0, 10.0, 20.0])
        assert [f.step for f in got] == [0, 100, 200]

    def test_rectangular_box(self, tmp_path):
        box = np.diag([2.0, 3.0, 4.0])
        path = self.write(tmp_path / f"t{self.ext}", frames_for(4, 1, box=box), atoms_for(4))
        np.testing.assert_allclose(read_frame(path).box, box, atol=self.box_tol)

    def test_more_than_99999_atoms(self, tmp_path):
        n = 100_012
        atoms = atoms_for(n)
        frames = frames_for(n, 1, box=np.diag([5.0, 5.0, 5.0]))
        path = self.write(tmp_path / f"big{self.ext}", frames, atoms)
        got = read_frame(path, n_atoms=n)
        np.testing.assert_allclose(got.positions, frames[0].positions, atol=self.tol)
        if self.has_labels:
            assert got.atoms.resids[-1] == atoms.resids[-1] % self.resid_wrap

    def test_atom_count_mismatch_names_file_and_frame(self, tmp_path):
        path = self.write(tmp_path / f"t{self.ext}", frames_for(6, 2), atoms_for(6))
        with pytest.raises(TrajectoryError) as err:
            list(read_frames(path, n_atoms=7))
        text = str(err.value)
        assert str(path) in text and "frame 0" in text and "has 6 atoms, expected 7" in text

    def test_reader_streams(self, tmp_path):
        path = self.write(tmp_path / f"t{self.ext}", frames_for(6, 2), atoms_for(6))
        it = read_frames(path)
        assert inspect.isgenerator(it)
        first = next(it)
        assert first.n_atoms == 6
        it.close()

    def test_empty_file(self, tmp_path):
        path = tmp_path / f"empty{self.ext}"
        path.write_bytes(b"")
        with pytest.raises(TrajectoryError) as err:
            list(read_frames(path))
        assert str(path) in str(err.value)

    def test_missing_file(self, tmp_path):
        with pytest.raises(TrajectoryError, match="file not found"):
            read_frames(tmp_path / f"none{self.ext}")


class TestGro(ReaderContract):
    ext = ".gro"
    tol = 0.0005 + 1e-9
    has_labels = True
    resid_wrap = 100000

    def test_velocities_round_trip(self, tmp_path):
        f = frames_for(4, 1)[0]
        f.velocities = np.arange(12, dtype=float).reshape(4, 3) / 7
        path = self.write(tmp_path / "v.gro", [f], atoms_for(4))
        got = read_frame(path)
        np.testing.assert_allclose(got.velocities, f.velocities, atol=5e-5 + 1e-9)
        assert read_frame(DATA / "toy.gro").velocities is None

    def test_atom_numbers_wrap_on_write(self, tmp_path):
        n = 100_002
        path = self.write(tmp_path / "big.gro", frames_for(n, 1, box=np.diag([5.0] * 3)), atoms_for(n))
        with open(path) as fh:
            lines = fh.readlines()
        assert lines[1].strip() == str(n)
        assert lines[2 + 99_998][15:20] == "99999"
        assert lines[2 + 99_999][15:20] == "    0"
        assert lines[2 + 100_000][15:20] == "    1"

    def test_variable_precision(self, tmp_path):
        p = tmp_path / "prec.gro"
        p.write_text("high precision t= 2.5\n    2\n"
                     "    1SOL     OW    1   0.12345   1.23456  -0.50000  0.123456  0.000000 -1.000000\n"
                     "    1SOL    HW1    2  10.00001   0.00002   0.00003  0.000000  0.000000  0.000000\n"
                     "   3.00000   3.00000   3.00000\n")
        f = read_frame(p)
        np.testing.assert_allclose(f.positions, [[0.12345, 1.23456, -0.5], [10.00001, 0.00002, 0.00003]])
        np.testing.assert_allclose(f.velocities[0], [0.123456, 0.0, -1.0])
        assert f.time == 2.5 and f.title == "high precision"

    def test_triclinic_box_order(self, tmp_path):
        # GROMACS order: v1(x) v2(y) v3(z) v1(y) v1(z) v2(x) v2(z) v3(x) v3(y)
        p = tmp_path / "tri.gro"
        p.write_text("t\n    1\n    1A        A    1   0.100   0.100   0.100\n"
                     "   1.0 2.0 3.0 0.0 0.0 0.4 0.0 0.5 0.6\n")
        np.testing.assert_allclose(read_frame(p).box, [[1.0, 0, 0], [0.4, 2.0, 0], [0.5, 0.6, 3.0]])

    def test_toy_file(self):
        f = read_frame(DATA / "toy.gro", n_atoms=14)
        assert f.atoms.names[:3].tolist() == ["C1", "H1", "C2"]
        assert f.atoms.resids.tolist() == [1] * 7 + [2] * 7
        assert (f.time, f.step) == (1.5, 3)


GOOD_ATOM = "    1MOL     C1    1   0.100   0.200   0.300\n"


@pytest.mark.parametrize("text, line, message", [
    ("title\n", 2, "expected the number of atoms"),
    ("title\nthree\n", 2, "expected the number of atoms (an integer), got 'three'"),
    ("title\n    3\n" + GOOD_ATOM * 2, 5, "file ends after 2 of 3 atom lines"),
    ("title\n    2\n" + GOOD_ATOM * 2, 5, "file ends after 2 atom lines; expected the box line"),
    ("title\n    1\n" + GOOD_ATOM * 2 + "   1 1 1\n", 4, "expected the box line (3 or 9 numbers)"),
    ("title\n    1\n    1MOL     C1    1   0.100   x.200   0.300\n   1 1 1\n", 3,
     "expected a number for y in columns 29-36"),
    ("title\n    2\n" + GOOD_ATOM + "    1MOL     C1    1   0.100     nan   0.300\n   1 1 1\n", 4, "NaN or infinite"),
    ("title\n    2\n" + GOOD_ATOM + "    1MOL     C1    1   0.100    -inf   0.300\n   1 1 1\n", 4, "NaN or infinite"),
    ("title\n    1\n    1MOL     C1    1   0.100   0.200\n   1 1 1\n", 3, "expected three coordinates"),
    ("title\n    1\n" + GOOD_ATOM + "   0.0 0.0 0.0\n", 4, "box is zero"),
    ("title\n    1\n" + GOOD_ATOM + "   1.0 0.0 1.0\n", 4, "singular"),
    ("title\n    1\n" + GOOD_ATOM + "   1 1 1\n" + "\n" + "x\n", 5, "expected a title line of the next frame"),
])
def test_bad_gro_names_file_and_line(tmp_path, text, line, message):
    p = tmp_path / "bad.gro"
    p.write_text(text)
    with pytest.raises(TrajectoryError) as err:
        list(read_frames(p))
    assert str(err.value).startswith(f"{p}:{line}"), str(err.value)
    assert message in str(err.value)


def test_empty_gro_points_at_line_1(tmp_path):
    p = tmp_path / "empty.gro"
    p.write_text("")
    with pytest.raises(TrajectoryError, match=r"empty.gro:1.*empty file"):
        list(read_frames(p))


def test_gro_atom_count_mismatch_names_line(tmp_path):
    p = tmp_path / "t.gro"
    p.write_text("t\n    1\n" + GOOD_ATOM + "   1 1 1\n")
    with pytest.raises(TrajectoryError, match=r"t.gro:2 \(frame 0\): has 1 atoms, expected 5"):
        list(read_frames(p, n_atoms=5))


class TestXtc(ReaderContract):
    ext = ".xtc"
    tol = 0.0005 + 1e-6  # precision 1000, float32
    box_tol = 1e-6

    def test_truncated_file_names_frame(self, tmp_path):
        path = self.write(tmp_path / "t.xtc", frames_for(200, 3), atoms_for(200))
        data = path.read_bytes()
        cut = tmp_path / "cut.xtc"
        cut.write_bytes(data[: len(data) - 100])  # inside the last frame
        with pytest.raises(TrajectoryError) as err:
            list(read_frames(cut))
        assert str(cut) in str(err.value) and "frame 2" in str(err.value)

    def test_not_an_xtc(self, tmp_path):
        p = tmp_path / "junk.xtc"
        p.write_bytes(b"not an xtc file at all " * 20)
        with pytest.raises(TrajectoryError, match=r"junk.xtc \(frame 0\): not a readable XTC file"):
            list(read_frames(p))

    def test_cg_xtc_with_wrong_bead_count(self, shared_data):
        path = shared_data / "sps" / "t568_train" / "cg.xtc"
        with pytest.raises(TrajectoryError, match=r"cg.xtc \(frame 0\): has 720 atoms, expected 5832"):
            next(read_frames(path, n_atoms=5832))


class TestPdb(ReaderContract):
    ext = ".pdb"
    tol = 0.00005 + 1e-9
    has_labels = True
    box_tol = 5e-4  # CRYST1 has 0.001 Å lengths and 0.01 degree angles
    resid_wrap = 10 ** 4 + 2 * 26 * 36 ** 3

    def test_hybrid36(self):
        from gmx_dbm.io.pdb import hy36decode, hy36encode
        assert hy36encode(5, 99999) == "99999"
        assert hy36encode(5, 100000) == "A0000"
        assert hy36encode(4, 10000) == "A000"
        for v in (1, 99999, 100000, 123456, 2436111, 2436112, 4000000):
            assert hy36decode(5, hy36encode(5, v)) == v

    def test_time_from_gromacs_title(self, tmp_path):
        # gmx trjconv writes each frame's time and step into its TITLE record
        p = tmp_path / "g.pdb"
        p.write_text("TITLE     protein t=  12.50000 step= 250\n"
                     "CRYST1   30.000   30.000   30.000  90.00  90.00  90.00 P 1           1\nMODEL        1\n"
                     "ATOM      1  CA  ALA     1       1.000   2.000   3.000  1.00  0.00            \nENDMDL\n")
        f = read_frame(p)
        assert (f.time, f.step) == (12.5, 250) and f.atoms.elements is None

    def test_element_column_written_and_read(self, tmp_path):
        atoms = AtomInfo(["CA", "HB1", "CL"], ["MOL"] * 3, [1] * 3, ["C", "H", "Cl"])
        path = self.write(tmp_path / "e.pdb", frames_for(3, 1), atoms)
        assert pdb_element_column(path) == [" C", " H", "CL"]
        assert read_frame(path).atoms.elements.tolist() == ["C", "H", "Cl"]

    def test_element_column_blank_without_elements(self, tmp_path):
        # a name alone is ambiguous ('CA': C-alpha or calcium): no guess is written
        path = self.write(tmp_path / "e.pdb", frames_for(2, 1), AtomInfo(["CA", "B1"], ["MOL"] * 2, [1] * 2))
        assert pdb_element_column(path) == ["  ", "  "]
        assert read_frame(path).atoms.elements is None


def test_truncated_xtc_header_names_frame(tmp_path):
    """Bytes after the last complete frame, too few for a frame header, are a truncated frame, not the
    end of the file."""
    path = tmp_path / "t.xtc"
    write_frames(path, atoms_for(50), frames_for(50, 2))
    data = path.read_bytes()
    for extra in (b"\x00", b"\x00\x00\x07"):
        cut = tmp_path / "cut.xtc"
        cut.write_bytes(data + extra)
        with pytest.raises(TrajectoryError, match=rf"cut.xtc \(frame 2\): truncated file: {len(extra)} "
                                                  r"byte\(s\) after the last complete frame"):
            list(read_frames(cut))
    assert count_frames(path) == 2


# ------------------------------------------------------------------ files written by other programs
N_FOREIGN = 9
FOREIGN_NAMES = ["C1", "H1", "CL1", "BR1", "CA", "N", "O", "OW", "HW1"]
FOREIGN_RESIDS = [1, 1, 1, 1, 2, 2, 2, 3, 3]
FOREIGN_RESNAMES = ["LIG"] * 4 + ["ALA"] * 3 + ["SOL"] * 2
FOREIGN_BOX = np.array([[3.0, 0.0, 0.0], [0.6, 2.8, 0.0], [-0.4, 0.5, 2.6]])


def foreign_frames(count=3):
    """Reference frames on a 0.001 nm grid (exact in every format's precision)."""
    rng = np.random.default_rng(7)
    return [Frame(positions=np.round(rng.uniform(0.1, 2.4, (N_FOREIGN, 3)), 3), box=FOREIGN_BOX.copy(),
                  time=5.0 * k, step=50 * k) for k in range(count)]


def mdanalysis_write(path, frames):
    """Write frames with MDAnalysis' own writers (Å in MDAnalysis; lengths/angles for the box)."""
    mda = pytest.importorskip("MDAnalysis")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # MDAnalysis warns about attributes the formats lack
        resindex = np.unique(FOREIGN_RESIDS, return_inverse=True)[1]
        u = mda.Universe.empty(N_FOREIGN, n_residues=resindex.max() + 1, atom_resindex=resindex, trajectory=True)
        u.add_TopologyAttr("names", FOREIGN_NAMES)
        resids = sorted(set(FOREIGN_RESIDS))
        u.add_TopologyAttr("resnames", [FOREIGN_RESNAMES[FOREIGN_RESIDS.index(r)] for r in resids])
        u.add_TopologyAttr("resids", resids)
        with mda.Writer(str(path), N_FOREIGN) as w:
            for f in frames:
                lengths, angles = box_lengths_angles(f.box)
                u.atoms.positions = f.positions * 10.0
                u.dimensions = [*(np.asarray(lengths) * 10.0), *angles]
                u.trajectory.ts.time = f.time
                w.write(u.atoms)
    return path


class FileReaderContract:
    """Reading a file another program wrote. Subclasses set ``ext``, the expected counts and tolerances,
    and implement ``make(tmp_path)`` returning the file; ``reference`` are the frames it holds."""
    ext = None
    expected_n_atoms = N_FOREIGN
    expected_n_frames = 3
    tol = 0.0005 + 1e-6          # nm: 0.001 nm grid, float32 in .xtc
    box_tol = 1e-5
    has_labels = True
    has_time = True

    def make(self, tmp_path):
        raise NotImplementedError

    @pytest.fixture
    def written(self, tmp_path):
        return self.make(tmp_path)

    @property
    def reference(self):
        return foreign_frames(self.expected_n_frames)

    def test_n_atoms(self, written):
        assert read_frame(written).n_atoms == self.expected_n_atoms
        read_frame(written, n_atoms=self.expected_n_atoms)

    def test_n_frames(self, written):
        assert count_frames(written) == self.expected_n_frames

    def test_positions(self, written):
        got = list(read_frames(written))
        for ref, frame in zip(self.reference, got):
            assert frame.positions.dtype == np.float64
            np.testing.assert_allclose(frame.positions, ref.positions, atol=self.tol)

    def test_box(self, written):
        for ref, frame in zip(self.reference, read_frames(written)):
            np.testing.assert_allclose(frame.box, ref.box, atol=self.box_tol)

    def test_labels(self, written):
        atoms = read_frame(written).atoms
        if not self.has_labels:
            assert atoms is None
            return
        assert atoms.names.tolist() == FOREIGN_NAMES
        assert atoms.resnames.tolist() == FOREIGN_RESNAMES
        assert atoms.resids.tolist() == FOREIGN_RESIDS

    def test_time(self, written):
        if self.has_time:
            times = [f.time for f in read_frames(written)]
            assert times == pytest.approx([f.time for f in self.reference], abs=1e-4)


class TestMDAnalysisGro(FileReaderContract):
    ext = ".gro"
    expected_n_frames = 1   # MDAnalysis' .gro writer keeps one frame
    has_time = False

    def make(self, tmp_path):
        return mdanalysis_write(tmp_path / "mda.gro", self.reference)


class TestMDAnalysisPdb(FileReaderContract):
    ext = ".pdb"
    box_tol = 5e-4          # CRYST1: 0.001 Å lengths, 0.01 degree angles
    has_time = False

    def make(self, tmp_path):
        return mdanalysis_write(tmp_path / "mda.pdb", self.reference)


class TestMDAnalysisXtc(FileReaderContract):
    ext = ".xtc"
    box_tol = 1e-6
    has_labels = False

    def make(self, tmp_path):
        return mdanalysis_write(tmp_path / "mda.xtc", self.reference)


def gromacs_inputs(tmp_path):
    """The reference as a one-frame .gro and a multi-frame .xtc, written by MDAnalysis for GROMACS."""
    frames = foreign_frames(3)
    return mdanalysis_write(tmp_path / "ref.gro", frames[:1]), mdanalysis_write(tmp_path / "ref.xtc", frames)


class GromacsFileContract(FileReaderContract):
    """Files written by ``gmx trjconv`` (all frames of ref.xtc, labels from ref.gro) or ``gmx editconf``
    (ref.gro); ``tool`` picks which."""
    tool = "trjconv"

    @pytest.fixture
    def written(self, tmp_path, gmx):
        from gmx_dbm.gromacs import run_gmx
        ref_gro, ref_xtc = gromacs_inputs(tmp_path)
        out = tmp_path / f"gmx{self.ext}"
        if self.tool == "editconf":
            run_gmx(["editconf", "-f", ref_gro, "-o", out], cwd=tmp_path, gmx=gmx)
        else:   # group 0 (System) when trjconv asks which atoms to write
            run_gmx(["trjconv", "-f", ref_xtc, "-s", ref_gro, "-o", out], cwd=tmp_path, gmx=gmx, input_text="0\n")
        return out


@pytest.mark.gromacs
class TestGromacsTrjconvGro(GromacsFileContract):
    ext = ".gro"


@pytest.mark.gromacs
class TestGromacsTrjconvPdb(GromacsFileContract):
    ext = ".pdb"
    box_tol = 5e-4


@pytest.mark.gromacs
class TestGromacsTrjconvXtc(GromacsFileContract):
    ext = ".xtc"
    box_tol = 1e-6
    has_labels = False


@pytest.mark.gromacs
class TestGromacsEditconfGro(GromacsFileContract):
    ext = ".gro"
    tool = "editconf"
    expected_n_frames = 1
    has_time = False


@pytest.mark.gromacs
class TestGromacsEditconfPdb(GromacsFileContract):
    ext = ".pdb"
    tool = "editconf"
    expected_n_frames = 1
    box_tol = 5e-4
    has_time = False


# ------------------------------------------------------------------------------- PDB element column
ELEMENT_TOP = """
[ defaults ]
1 2 no 1.0 1.0
[ atomtypes ]
cl 35.45  0.0 A 0.35 0.3
br 79.90  0.0 A 0.39 0.3
ca 12.011 0.0 A 0.34 0.3
hm 3.024  0.0 A 0.25 0.1
[ moleculetype ]
LIG 3
[ atoms ]
1 cl 1 LIG CL1 1 0.0
2 br 1 LIG BR1 1 0.0
3 ca 1 LIG CA  1 0.0
4 hm 1 LIG H1  1 0.0
[ molecules ]
LIG 1
"""


def pdb_element_column(path):
    return [line[76:78] for line in Path(path).read_text().splitlines() if line.startswith(("ATOM", "HETATM"))]


def test_pdb_element_column_from_topology(tmp_path):
    from gmx_dbm.elements import elements
    from gmx_dbm.topology import read_topology
    top = tmp_path / "lig.top"
    top.write_text(textwrap.dedent(ELEMENT_TOP))
    flat = read_topology(top).flat()
    atoms = AtomInfo.from_topology(flat)
    assert atoms.elements.tolist() == ["Cl", "Br", "C", "H"]
    path = tmp_path / "lig.pdb"
    write_frames(path, atoms, frames_for(4, 1))
    assert pdb_element_column(path) == ["CL", "BR", " C", " H"]
    # the column is the element rule of gmx_dbm.elements, written in the PDB's capitals
    assert [c.strip() for c in pdb_element_column(path)] == \
        [e.upper() for e in elements(flat.names, flat.types, flat.masses)]
    assert read_frame(path).atoms.elements.tolist() == ["Cl", "Br", "C", "H"]


def test_atominfo_checks_element_count():
    with pytest.raises(ValueError, match="2 names but 1 elements"):
        AtomInfo(["C1", "C2"], ["M", "M"], [1, 1], ["C"])


# ------------------------------------------------------------------------------------ writers, safety
def test_unknown_extension_lists_known_formats(tmp_path):
    with pytest.raises(OutputError, match=r"unknown output format '.trr'; known: .gro, .xtc, .pdb"):
        open_writer(tmp_path / "x.trr", atoms_for(1))
    with pytest.raises(TrajectoryError, match=r"unknown trajectory format '.dcd'; known: .gro, .xtc, .pdb"):
        read_frames(tmp_path / "x.dcd")


def test_existing_output_is_backed_up(tmp_path):
    path = tmp_path / "out.gro"
    for k in range(3):
        write_frames(path, atoms_for(3), frames_for(3, 1, seed=k))
    assert sorted(os.listdir(tmp_path)) == ["#out.gro.1#", "#out.gro.2#", "out.gro"]  # oldest is .1
    (tmp_path / "first.gro").write_bytes((tmp_path / "#out.gro.1#").read_bytes())
    first = read_frame(tmp_path / "first.gro")
    np.testing.assert_allclose(first.positions, frames_for(3, 1, seed=0)[0].positions, atol=5e-4)


def test_exception_leaves_nothing(tmp_path):
    path = tmp_path / "out.xtc"
    with pytest.raises(RuntimeError):
        with open_writer(path, atoms_for(3)) as w:
            w.write(frames_for(3, 1)[0])
            raise RuntimeError("model crashed")
    assert os.listdir(tmp_path) == []


def test_exception_keeps_existing_target(tmp_path):
    path = tmp_path / "out.gro"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with open_writer(path, atoms_for(3)):
            raise RuntimeError
    assert os.listdir(tmp_path) == ["out.gro"] and path.read_text() == "old"


@pytest.fixture
def umask(request):
    """Set the process umask to ``request.param`` for one test and put the previous one back."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], indirect=["umask"])
def test_output_permissions_follow_umask(tmp_path, umask, mode):
    # the temporary file is created 0600; the result gets what open() would have given it
    with atomic_output(tmp_path / "model.json") as tmp:
        Path(tmp).write_text("{}")
    assert (tmp_path / "model.json").stat().st_mode & 0o777 == mode
    write_frames(tmp_path / "t.gro", atoms_for(2), frames_for(2, 1))
    assert (tmp_path / "t.gro").stat().st_mode & 0o777 == mode
    assert os.umask(umask) == umask   # reading the umask inside gmx_dbm left it as it was


def test_atomic_output(tmp_path):
    path = tmp_path / "model.json"
    with atomic_output(path) as tmp:
        assert Path(tmp).parent == tmp_path and Path(tmp).suffix == ".json"
        Path(tmp).write_text("{}")
        assert not path.exists()
    assert path.read_text() == "{}"
    with atomic_output(path) as tmp:
        Path(tmp).write_text("[]")
    assert (tmp_path / "#model.json.1#").read_text() == "{}"
    with pytest.raises(ValueError):
        with atomic_output(path) as tmp:
            Path(tmp).write_text("partial")
            raise ValueError
    assert sorted(os.listdir(tmp_path)) == ["#model.json.1#", "model.json"]
    assert path.read_text() == "[]"


def test_check_writable(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(tmp_path / "missing" / "x.gro")
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(OutputError, match="does not exist"):
        open_writer(tmp_path / "missing" / "x.gro", atoms_for(1))
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="not writable"):
                check_writable(ro / "x.gro")
        finally:
            ro.chmod(0o700)
    assert check_writable(tmp_path / "ok.gro") == tmp_path / "ok.gro"


def test_writer_checks_atom_count(tmp_path):
    with pytest.raises(TrajectoryError, match="frame has 4 atoms but the writer's atoms are 3"):
        with open_writer(tmp_path / "x.gro", atoms_for(3)) as w:
            w.write(frames_for(4, 1)[0])
    assert os.listdir(tmp_path) == []


def test_io_does_not_import_torch():
    code = ("import sys, gmx_dbm.io, gmx_dbm.io.gro, gmx_dbm.io.xtc, gmx_dbm.io.pdb, gmx_dbm.topology, "
            "gmx_dbm.io.preprocess, gmx_dbm.geometry, gmx_dbm.mapping; list(gmx_dbm.io.read_frames(sys.argv[1])); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "above = [m for m in sys.modules if m.split('.')[:2] in (['gmx_dbm', 'ff'], ['gmx_dbm', 'model'], "
            "['gmx_dbm', 'backmap'], ['gmx_dbm', 'relax'], ['gmx_dbm', 'evaluate'])]; "
            "assert not above, above")
    subprocess.run([sys.executable, "-c", code, str(DATA / "toy.gro")], check=True)


def _imports(path):
    """(module, names) of every ``from X import names`` in a file, module relative as written."""
    import ast
    tree = ast.parse(Path(path).read_text())
    return [("." * node.level + (node.module or ""), [a.name for a in node.names])
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


def test_format_modules_import_only_base():
    import gmx_dbm.io as io_pkg
    folder = Path(io_pkg.__file__).parent
    siblings = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    for fmt in ("gro", "pdb", "xtc"):
        used = {mod for mod, _ in _imports(folder / f"{fmt}.py") if mod.startswith(".") and not mod.startswith("..")}
        assert used <= {".base"}, (fmt, used)
    # no io module takes a private name from another io module
    for path in folder.glob("*.py"):
        for mod, names in _imports(path):
            if mod.lstrip(".") in siblings and mod.startswith(".") and not mod.startswith(".."):
                private = [n for n in names if n.startswith("_")]
                assert not private, (path.name, mod, private)


def test_registry_lists_the_formats():
    from gmx_dbm.io.base import read_formats, reader_for, write_formats, writer_for
    from gmx_dbm.io.gro import GroWriter, read_gro
    assert read_formats() == write_formats() == (".gro", ".xtc", ".pdb")
    assert reader_for("x.GRO") is read_gro and writer_for("a/b.gro") is GroWriter
