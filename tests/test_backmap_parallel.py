"""Long backmap runs: frames dealt out to MPI ranks (real mpirun + mpi4py), checkpoints that survive SIGKILL
(``--resume``), a CG trajectory cut inside its last frame, and a failing rank.

The system is tests/data/sps_mix (310 atoms, three chain lengths) mapped to CG and repeated as 4 frames;
the generator runs with 1 Gibbs sweep and no thermalisation so that a frame takes a few seconds."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.io import AtomInfo, open_writer, read_frame, read_frames
from gmx_dbm.mapping import map_trajectory, read_mapping
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
MIX = ROOT / "tests" / "data" / "sps_mix"
TOP, MAP = MIX / "topol.top", ROOT / "mappings" / "sps.map"
N_FRAMES = 4
FAST = ["--md-steps", "0", "--gibbs", "1", "--temperature", "453", "--threads", "1", "--seed", "7"]


def _mpi_env():
    env = dict(os.environ)
    # containers run as root; Open MPI refuses that unless told twice
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    return env


def _mpirun():
    exe = shutil.which("mpirun") or shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpirun not found (install Open MPI or MPICH)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed")
    return exe


@pytest.fixture(scope="module")
def cg(tmp_path_factory):
    """4 CG frames of sps_mix, each shifted a little so that the frames differ."""
    d = tmp_path_factory.mktemp("cg")
    system = read_topology(TOP)
    one = d / "one.gro"
    map_trajectory(MIX / "aa.gro", system, read_mapping([MAP], system), one)
    fr = read_frame(one)
    rng = np.random.default_rng(3)
    out = d / "cg.xtc"
    with open_writer(out, AtomInfo(fr.atoms.names, fr.atoms.resnames, fr.atoms.resids)) as w:
        base = fr.positions.copy()
        for k in range(N_FRAMES):
            fr.positions = base + rng.normal(0, 0.01, base.shape)
            fr.time, fr.step = float(k), k
            w.write(fr)
    return out


def _cmd(cg, out, *extra):
    return [sys.executable, "-m", "gmx_dbm", "-q", "backmap", "-c", str(cg), "-p", str(TOP), "-m", str(MAP),
            "-o", str(out), *FAST, *extra]


@pytest.fixture(scope="module")
def reference(cg, tmp_path_factory):
    """One process, uninterrupted."""
    out = tmp_path_factory.mktemp("ref") / "aa.xtc"
    subprocess.run(_cmd(cg, out), check=True, capture_output=True, timeout=600)
    return out


def test_reference_run_leaves_no_checkpoint(reference):
    assert len(list(read_frames(reference))) == N_FRAMES
    left = sorted(p.name for p in reference.parent.iterdir())
    assert left == ["aa.xtc"], left


@pytest.mark.slow
def test_two_mpi_ranks_write_the_same_bytes(cg, reference, tmp_path):
    exe = _mpirun()
    out = tmp_path / "aa.xtc"
    r = subprocess.run([exe, "-n", "2", *_cmd(cg, out)], capture_output=True, text=True, timeout=600, env=_mpi_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aa.xtc"]


def _kill_after_frames(cmd, cpt: Path, frames: int, env=None, timeout: float = 300):
    """Start ``cmd`` in its own process group; SIGKILL the group once the checkpoint records ``frames``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                raise AssertionError(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            try:
                if json.loads(cpt.read_text())["frames"] >= frames:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("no checkpoint appeared")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_bytes(cg, reference, tmp_path):
    out = tmp_path / "aa.xtc"
    cpt, part = tmp_path / "aa.xtc.cpt", tmp_path / ".aa.xtc.part.xtc"
    _kill_after_frames(_cmd(cg, out), cpt, 2)
    assert not out.exists() and cpt.exists() and part.exists()
    done = json.loads(cpt.read_text())["frames"]
    assert 2 <= done < N_FRAMES
    # a checkpoint made with other settings is refused, and kept
    r = subprocess.run(_cmd(cg, out, "--resume", "--seed", "8"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "settings" in r.stderr and "aa.xtc.cpt" in r.stderr, r.stderr
    assert cpt.exists() and not out.exists()
    r = subprocess.run(_cmd(cg, out, "--resume"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.read_bytes() == reference.read_bytes()
    assert not cpt.exists() and not part.exists()


@pytest.mark.slow
def test_sigkill_under_mpi_then_resume_with_one_rank(cg, reference, tmp_path):
    exe = _mpirun()
    out = tmp_path / "aa.xtc"
    cpt = tmp_path / "aa.xtc.cpt"
    _kill_after_frames([exe, "-n", "2", *_cmd(cg, out)], cpt, 1, env=_mpi_env())
    assert not out.exists() and cpt.exists()
    r = subprocess.run([exe, "-n", "2", *_cmd(cg, out, "--resume")], capture_output=True, text=True, timeout=600,
                       env=_mpi_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.slow
def test_failing_rank_stops_every_rank_with_one_error_and_no_output(cg, tmp_path):
    """Frame 1 (rank 1's) names a bead wrongly: one error line from rank 0, exit code 2, nothing written."""
    exe = _mpirun()
    frames = list(read_frames(cg))
    atoms = read_frame(cg.parent / "one.gro").atoms
    bad = tmp_path / "cg.gro"
    with open_writer(bad, atoms) as w:
        for f in frames:
            w.write(f)
    lines = bad.read_text().splitlines(keepends=True)
    row = (len(atoms) + 3) + 2 + 5          # frame 1: after frame 0's lines, its title and count; bead 6
    lines[row] = lines[row][:10] + f"{'XX':>5s}" + lines[row][15:]
    bad.write_text("".join(lines))
    out = tmp_path / "aa.gro"
    (tmp_path / "aa.gro").write_text("previous result\n")
    r = subprocess.run([exe, "-n", "2", *_cmd(bad, out)], capture_output=True, text=True, timeout=600,
                       env=_mpi_env())
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("gmx_dbm backmap: error:")]
    assert len(errors) == 1 and "frame 1" in errors[0] and "XX" in errors[0], r.stderr[-2000:]
    assert out.read_text() == "previous result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aa.gro", "cg.gro"]


def test_cg_trajectory_cut_inside_its_last_frame_is_backmapped_up_to_it(cg, tmp_path, caplog):
    from gmx_dbm.backmap import backmap
    data = cg.read_bytes()
    cut = tmp_path / "cg.xtc"
    cut.write_bytes(data[:len(data) - 40])
    out = tmp_path / "aa.gro"
    with caplog.at_level("WARNING"):
        summary = backmap(cut, TOP, [MAP], out, gibbs=0, md_steps=0, temperature=453, quality=False,
                          progress=False, frames=None)
    assert summary["frames"] == N_FRAMES - 1
    assert len(list(read_frames(out))) == N_FRAMES - 1
    assert any(f"inside frame {N_FRAMES - 1}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("env, expected", [({}, "True"), ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "False")])
def test_allocator_thresholds_are_set_unless_the_user_set_them(env, expected):
    """The gmx_dbm command sets glibc's malloc thresholds at start (``parallel.tune_allocator``), except
    where the user's environment already does; in a fresh process, as the setting is process-wide."""
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("needs glibc (mallopt)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", "from gmx_dbm.parallel import tune_allocator; print(tune_allocator())"],
                         env={**clean, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
