"""`mpirun -n 2 gmx_dbm relax`: the frames of a trajectory dealt out to MPI ranks, through real mpirun and
real GROMACS/gmxapi on the toy system (tests/data/toy.*, 14 atoms, 3 frames). Checked: the output is
byte-identical to a one-process run (one OpenMP thread per mdrun, fixed seeds), an existing output is
backed up, the summary holds every frame; a frame that GROMACS rejects on rank 1 and a topology error seen
by every rank each give exit code 2, one error line and no output. Skipped (with the reason) without
mpirun or mpi4py; the runs that need GROMACS use the ``gmx`` fixture."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.cli import main
from gmx_dbm.geometry import minimum_image
from gmx_dbm.io import Frame, open_writer, read_frame, read_frames

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "tests" / "data" / "toy.top"
# short runs: EM converges in ~10 steps, 200 MD steps; one mdrun thread so that MD repeats bit for bit
RUN = ["--steps-em", "200", "--md-ps", "0.2", "--md-threads", "1"]


@pytest.fixture(scope="module")
def mpirun() -> list:
    """The launcher's command prefix for 2 ranks (Open MPI: --oversubscribe, machines with 1-2 cores)."""
    exe = shutil.which("mpirun")
    if exe is None:
        pytest.skip("mpirun not found on PATH (install Open MPI or MPICH)")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install mpi4py)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    extra = ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    return [exe, "-n", "2", *extra]


def _run_mpi(mpirun, args, cwd, timeout=120, command="relax") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if hasattr(os, "geteuid") and os.geteuid() == 0:   # Open MPI refuses root without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.run([*mpirun, sys.executable, "-m", "gmx_dbm", command, *[str(a) for a in args]],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _error_lines(stderr: str) -> list:
    return [ln for ln in stderr.splitlines() if ln.startswith("gmx_dbm relax: error:")]


def _toy_trajectory(path, n_frames=3, bad_box_frame=None):
    """tests/data/toy.gro with whole molecules in a 3 nm box (rlist must stay under half the box), small
    random displacements per frame; ``bad_box_frame`` gets a 1.5 nm box, which grompp rejects."""
    fr = read_frame(ROOT / "tests" / "data" / "toy.gro")
    pos = np.asarray(fr.positions, float).copy()
    box = np.asarray(fr.box, float)
    for m in range(2):   # 7 atoms per molecule
        p = pos[7 * m:7 * m + 7]
        p[:] = p[0] + minimum_image(p - p[0], box)
    pos += 0.5
    rng = np.random.default_rng(0)
    with open_writer(path, fr.atoms) as w:
        for k in range(n_frames):
            b = np.diag([1.5] * 3) if k == bad_box_frame else np.diag([3.0] * 3)
            w.write(Frame(pos + rng.normal(scale=0.01, size=pos.shape), b, time=float(k), step=k))
    return path


@pytest.mark.gromacs
def test_two_ranks_write_what_one_process_writes(gmx, mpirun, tmp_path):
    traj = _toy_trajectory(tmp_path / "toy3.xtc")
    one = tmp_path / "one"
    one.mkdir()
    assert main(["-q", "relax", "-c", str(traj), "-p", str(TOP), "-o", str(one / "out.xtc"), *RUN,
                 "--workdir", str(one / "work"), "--summary", str(one / "summary.json")]) == 0
    two = tmp_path / "two"
    two.mkdir()
    (two / "out.xtc").write_bytes(b"an older output")
    proc = _run_mpi(mpirun, ["-c", traj, "-p", TOP, "-o", two / "out.xtc", *RUN, "--workdir", two / "work",
                             "--summary", two / "summary.json"], cwd=two)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # mdrun with one thread and fixed seeds repeats bit for bit: the same bytes as one process
    assert (two / "out.xtc").read_bytes() == (one / "out.xtc").read_bytes()
    assert [f.step for f in read_frames(two / "out.xtc", n_atoms=14)] == [0, 1, 2]
    assert (two / "#out.xtc.1#").read_bytes() == b"an older output"
    assert not [p.name for p in two.iterdir() if p.name.startswith(".out.xtc.")], "temporary file left"
    # the summary: every frame, in order, with the rank that ran it and its own work directory
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["ranks"] == 2
    assert [f["frame"] for f in s2["frames"]] == [0, 1, 2]
    assert [f["rank"] for f in s2["frames"]] == [0, 1, 0]
    for a, b in zip(s1["frames"], s2["frames"]):
        assert Path(b["workdir"]).parent == two / "work" / f"rank{b['rank']}"
        assert b["em"]["steps"] == a["em"]["steps"] and b["em"]["epot"] == a["em"]["epot"]
        assert b["md"]["epot"] == a["md"]["epot"]
    assert "relaxed on rank 1" in proc.stderr


@pytest.mark.gromacs
def test_frame_rejected_on_rank_1_stops_every_rank(gmx, mpirun, tmp_path):
    """Frame 1 (dealt to rank 1) has a box smaller than twice the cut-off: its grompp fails, rank 0 reports
    that one error, nothing is written."""
    traj = _toy_trajectory(tmp_path / "bad.xtc", bad_box_frame=1)
    proc = _run_mpi(mpirun, ["-c", traj, "-p", TOP, "-o", tmp_path / "out.xtc", *RUN, "--workdir",
                             tmp_path / "work"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "grompp" in lines[0] and "cut-off" in lines[0], lines
    assert str(tmp_path / "work" / "rank1" / "frame0001") in lines[0], lines   # the failing rank's folder
    assert not (tmp_path / "out.xtc").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.xtc.")], "temporary file left"
    assert (tmp_path / "work" / "rank1" / "frame0001" / "em" / "grompp.out").is_file()


def test_topology_error_on_every_rank_is_reported_once(mpirun, tmp_path):
    """Every rank reads the topology and fails the same way: one line (rank 0's), exit 2, and the work
    directory made beside the output is removed again. No GROMACS run is reached."""
    traj = _toy_trajectory(tmp_path / "toy3.xtc")
    (tmp_path / "bad.top").write_text('#include "nowhere.itp"\n[ system ]\nx\n[ molecules ]\n')
    proc = _run_mpi(mpirun, ["-c", traj, "-p", tmp_path / "bad.top", "-o", tmp_path / "out.xtc"],
                    cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "nowhere.itp" in lines[0] and "bad.top:1" in lines[0], proc.stderr[-3000:]
    assert not (tmp_path / "out.xtc").exists()
    assert not list(tmp_path.glob("gmx_dbm_relax_*"))


@pytest.mark.gromacs
def test_backmap_relax_over_two_ranks_writes_what_one_process_writes(gmx, mpirun, tmp_path):
    """`mpirun -n 2 gmx_dbm backmap --relax`: both steps deal the 3 frames out to the ranks, which share the
    one work directory rank 0 made; with one thread per rank and per mdrun the relaxed frames are the bytes of a
    one-process run."""
    from toy import DATA, build_toy_model
    (tmp_path / "toy").mkdir()
    toy = build_toy_model(tmp_path / "toy")
    traj = _toy_trajectory(tmp_path / "toy3.xtc")
    cg = tmp_path / "cg3.xtc"
    assert main(["-q", "map", "-f", str(traj), "-p", str(TOP), "-m", str(DATA / "toy.map"), "-o", str(cg)]) == 0
    args = ["-c", cg, "-p", TOP, "-m", DATA / "toy.map", "--model", toy["model"], "--threads", "1",
            "--md-steps", "20", "--temperature", "300", "--relax", *RUN]
    one = tmp_path / "one"
    one.mkdir()
    assert main(["-q", "backmap", *[str(a) for a in args], "-o", str(one / "out.xtc"),
                 "--workdir", str(one / "work")]) == 0
    two = tmp_path / "two"
    two.mkdir()
    # no --workdir: a fresh folder beside the output, which rank 0 makes and every rank uses
    proc = _run_mpi(mpirun, [*args, "-o", two / "out.xtc"], cwd=two, timeout=300, command="backmap")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [f.step for f in read_frames(two / "out.xtc", n_atoms=14)] == [0, 1, 2]
    assert (two / "out.xtc").read_bytes() == (one / "out.xtc").read_bytes()
    # one work directory: the backmapped frames, and the relaxation's folders per rank inside it
    (work,) = [p for p in two.iterdir() if p.name != "out.xtc"]
    assert work.name.startswith("gmx_dbm_relax_out_")
    assert (work / "backmapped.gro").is_file()
    assert sorted(p.name for p in (work / "relax").iterdir() if p.name.startswith("rank")) == ["rank0", "rank1"]


def test_child_processes_do_not_inherit_the_launcher():
    """A gmxapi stage's child process must not see its rank's MPI launcher variables (it would try to
    join the job as that rank); everything else, and Open MPI's run-as-root consent, stays."""
    from gmx_dbm.relax.engines import child_env
    env = child_env({"PATH": "/bin", "OMPI_COMM_WORLD_RANK": "1", "OMPI_MCA_orte_hnp_uri": "x",
                     "PMIX_RANK": "1", "PMI_FD": "5", "HYDI_CONTROL_FD": "6", "MPI_LOCALRANKID": "1",
                     "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMP_NUM_THREADS": "1"})
    assert env == {"PATH": "/bin", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMP_NUM_THREADS": "1"}
