"""Trajectory readers/writers: one contract test class that every format's test subclasses, bad-input
cases (each error names the file and the line or frame), and safe (atomic, backed-up) output."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.errors import OutputError, TrajectoryError
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


def test_atomic_output(tmp_path):
    path = tmp_path / "model.json"
    with atomic_output(path) as tmp:
        assert Path(tmp).parent == tmp_path and Path(tmp).suffix == ".json"
        Path(tmp).write_text("{}")
        assert not path.exists()
    assert path.read_text() == "{}"
    assert oct(path.stat().st_mode & 0o777) != oct(0o600) or os.umask(0o022) == 0o077
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
    code = ("import sys, gmx_dbm.io, gmx_dbm.io.gro, gmx_dbm.io.xtc, gmx_dbm.io.pdb, gmx_dbm.geometry, "
            "gmx_dbm.mapping; list(gmx_dbm.io.read_frames(sys.argv[1])); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(DATA / "toy.gro")], check=True)
