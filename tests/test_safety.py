"""Safety: model/checkpoint files never run code; outputs never half-written or silently replaced.

* A checkpoint crafted to run code when unpickled (its ``__reduce__`` creates a marker file) is refused
  by ``load_checkpoint``, ``load_model``, ``gmx_dbm backmap --model`` and ``gmx_dbm train --resume``, and
  the marker proves the code did not run. A control shows the same file *does* run code under a plain
  ``torch.load(weights_only=False)``, so the test would notice a loader that unpickles.
* Outputs are written to a temporary name in the target folder and moved into place at the end; an
  existing file becomes ``#name.1#``, then ``#name.2#`` (GROMACS' convention), through the ``map`` and
  ``backmap`` commands; a failed run leaves the previous file as it was and no temporary file.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gmx_dbm.cli import main  # noqa: E402
from gmx_dbm.errors import ModelFileError  # noqa: E402
from gmx_dbm.model.checkpoint import load_checkpoint, load_model  # noqa: E402
from toy import build_toy_model  # noqa: E402  (tests/toy.py)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
BAD = ROOT / "tests" / "bad_inputs"

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: a harmless stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft_checkpoint(path, marker) -> Path:
    """Looks like a training checkpoint (plain tensors and numbers) with one booby-trapped entry."""
    torch.save({"format": 1, "step": 3, "generator": {"w": torch.zeros(2)}, "extra": _Payload(marker)},
               str(path))
    return Path(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy model (3 training steps), its CG frame and config: {"dir", "cg", "model", "config"}."""
    return build_toy_model(tmp_path_factory.mktemp("toy_safety"), steps=3, checkpoint_every=3)


# ------------------------------------------------------------------------------- code in checkpoints
def test_crafted_checkpoint_runs_code_with_plain_pickle(tmp_path):
    """Control: the crafted file really executes code when unpickled without restrictions."""
    marker = tmp_path / "control_marker"
    path = craft_checkpoint(tmp_path / "crafted.pt", marker)
    torch.load(str(path), weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_code(tmp_path):
    marker = tmp_path / "marker"
    path = craft_checkpoint(tmp_path / "crafted.pt", marker)
    with pytest.raises(ModelFileError, match="refused or corrupt checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "the crafted checkpoint ran code"


def test_load_model_refuses_pickle(tmp_path):
    marker = tmp_path / "marker"
    for name in ("crafted.pt", "crafted.safetensors"):  # the extension must not matter
        path = craft_checkpoint(tmp_path / name, marker)
        with pytest.raises(ModelFileError, match="not a readable safetensors model file"):
            load_model(path)
    assert not marker.exists(), "the crafted model file ran code"


def test_backmap_refuses_crafted_model(toy, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = craft_checkpoint(tmp_path / "crafted.pt", marker)
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["backmap", "-c", str(toy["cg"]), "-p", str(DATA / "toy.top"), "-m", str(DATA / "toy.map"),
               "-o", str(out / "aa.gro"), "--model", str(path), "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("gmx_dbm backmap: error: ") and len(err.splitlines()) == 1, err
    assert "crafted.pt" in err
    assert not marker.exists(), "the crafted model file ran code"
    assert list(out.iterdir()) == []


def test_backmap_refuses_crafted_model_subprocess(toy, tmp_path):
    marker = tmp_path / "marker"
    path = craft_checkpoint(tmp_path / "crafted.pt", marker)
    res = subprocess.run([sys.executable, "-m", "gmx_dbm", "-q", "backmap", "-c", str(toy["cg"]),
                          "-p", str(DATA / "toy.top"), "-m", str(DATA / "toy.map"),
                          "-o", str(tmp_path / "aa.gro"), "--model", str(path)],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 2, res.stderr
    assert "crafted.pt" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists(), "the crafted model file ran code"
    assert not (tmp_path / "aa.gro").exists()


def test_train_resume_refuses_crafted_checkpoint(toy, tmp_path, capsys):
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    craft_checkpoint(run / "last.pt", marker)
    cfg = tmp_path / "toy.toml"
    cfg.write_text(toy["config"].read_text().replace(str(toy["dir"] / "run"), str(run)))
    rc = main(["train", str(cfg), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "last.pt" in err and "refused or corrupt checkpoint" in err and len(err.splitlines()) == 1, err
    assert not marker.exists(), "the crafted checkpoint ran code"
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # no training happened


# ------------------------------------------------------------------------------ atomic outputs, backups
def _hidden_temporaries(folder: Path) -> list:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _spy_replace(monkeypatch):
    """Record every os.replace made by gmx_dbm.io.safe: (source name, target name, target existed)."""
    from gmx_dbm.io import safe
    calls = []
    real = os.replace

    def spy(src, dst):
        calls.append((Path(src).name, Path(dst).name, Path(dst).exists(), Path(src).stat().st_size))
        return real(src, dst)

    monkeypatch.setattr(safe.os, "replace", spy)
    return calls


@pytest.mark.parametrize("command", ["map", "backmap"])
def test_outputs_are_atomic_and_backed_up(command, toy, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "result.gro"
    previous = "a previous result\n"
    target.write_text(previous)
    if command == "map":
        argv = ["map", "-f", str(DATA / "toy.gro"), "-p", str(DATA / "toy.top"), "-m", str(DATA / "toy.map"),
                "-o", str(target)]
    else:
        argv = ["backmap", "-c", str(toy["cg"]), "-p", str(DATA / "toy.top"), "-m", str(DATA / "toy.map"),
                "-o", str(target), "--model", str(toy["model"]), "--gibbs", "1", "--threads", "1"]
    every = _spy_replace(monkeypatch)

    assert main(argv) == 0
    # backmap's checkpoint (result.gro.cpt) is replaced after each frame, as a checkpoint is
    calls = [c for c in every if not c[1].endswith(".cpt")]
    # 1st run: the old file is moved to #result.gro.1#, then a finished temporary file (hidden, same
    # folder) is moved onto the target -- the target never holds a partial result
    assert [(c[0], c[1]) for c in calls[:1]] == [("result.gro", "#result.gro.1#")]
    src, dst, existed, size = calls[1]
    assert dst == "result.gro" and not existed
    assert src.startswith(".result.gro.") and (".tmp" in src or ".part" in src) and size > 0
    assert (out / "#result.gro.1#").read_text() == previous
    first = target.read_text()
    assert first != previous and first.splitlines()[1].strip() == ("4" if command == "map" else "14")

    # 2nd run: the first result becomes #result.gro.2#, #result.gro.1# stays
    argv_seed = argv + (["--seed", "5"] if command == "backmap" else [])
    assert main(argv_seed) == 0
    assert (out / "#result.gro.1#").read_text() == previous
    assert (out / "#result.gro.2#").read_text() == first
    assert sorted(p.name for p in out.iterdir()) == ["#result.gro.1#", "#result.gro.2#", "result.gro"]
    assert _hidden_temporaries(out) == []
    capsys.readouterr()


def test_failed_backmap_leaves_previous_output(toy, tmp_path, capsys):
    """Frame 0 is backmapped and written to the temporary file, frame 1 is bad: the run fails, the
    temporary file is removed, the existing output is neither replaced nor backed up."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "aa.xtc"
    target.write_bytes(b"previous")
    rc = main(["backmap", "-c", str(BAD / "cg_second_frame_bad.gro"), "-p", str(DATA / "toy.top"),
               "-m", str(DATA / "toy.map"), "-o", str(target), "--model", str(toy["model"]), "--gibbs", "1",
               "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "frame 1" in err
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in out.iterdir()) == ["aa.xtc"]


def test_failed_map_leaves_previous_output(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "cg.xtc"
    target.write_bytes(b"previous")
    traj = tmp_path / "two_frames.gro"
    # a good frame, then a truncated one: the first frame is mapped and written before the error
    good = (DATA / "toy.gro").read_text()
    traj.write_text(good + "".join(good.splitlines(keepends=True)[:8]))
    rc = main(["map", "-f", str(traj), "-p", str(DATA / "toy.top"), "-m", str(DATA / "toy.map"),
               "-o", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and "two_frames.gro:" in err, err
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in out.iterdir()) == ["cg.xtc"]


def test_checkpoint_rewrite_is_atomic(tmp_path, monkeypatch):
    """save_checkpoint replaces last.pt in one os.replace from a finished temporary file (no backup:
    it is a run-internal file), and a failure while saving keeps the old checkpoint."""
    from gmx_dbm.model.checkpoint import save_checkpoint
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    calls = _spy_replace(monkeypatch)
    save_checkpoint(path, {"step": 2, "w": torch.ones(3)})
    assert len(calls) == 1 and calls[0][1] == "last.pt" and calls[0][0].startswith(".last.pt.")
    assert load_checkpoint(path)["step"] == 2

    def broken_save(obj, f, *a, **k):
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 3})
    assert load_checkpoint(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
