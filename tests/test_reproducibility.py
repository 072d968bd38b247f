"""Reproducibility.

* ``gmx_dbm backmap`` with the same inputs and seed writes byte-identical files (one run in a separate
  process, one in-process); another seed gives other coordinates. On the real sPS CG frame
  (examples/sps/cg.gro, 720 beads -> 5832 atoms) with a tiny model trained on the shared sPS data, and
  on the toy system (needs no shared data).
* ``gmx_dbm train`` killed with SIGKILL at a random step after a checkpoint exists, then continued with
  ``--resume``, ends with exactly the same generator weights as an uninterrupted run with the same seed
  (the exported safetensors tensors compared with ``torch.equal``).

All runs use one CPU thread (``threads = 1`` / ``--threads 1``): the guarantee is for a fixed thread
count and machine, as for GROMACS.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gmx_dbm.cli import main  # noqa: E402
from toy import toy_config, train_config  # noqa: E402  (tests/toy.py)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def _toy_config(path, output, cg, **kw):
    """The toy config as this module always wrote it: frames ":", constraints "none"."""
    return toy_config(path, output, cg, name="tiny", frames=":", constraints="none", **kw)


# ---------------------------------------------------------------------------------------------- backmap
def _backmap_argv(cg, top, mp, out, model, seed):
    return ["-q", "backmap", "-c", str(cg), "-p", str(top), "-m", str(mp), "-o", str(out), "--model", str(model),
            "--gibbs", "1", "--seed", str(seed), "--threads", "1"]


def _coordinates(gro: Path) -> list:
    return [line[20:44] for line in gro.read_text().splitlines()[2:-1]]


def _check_reproducible(tmp_path, cg, top, mp, model):
    a, b, c = tmp_path / "a.gro", tmp_path / "b.gro", tmp_path / "c.gro"
    res = subprocess.run([sys.executable, "-m", "gmx_dbm", *_backmap_argv(cg, top, mp, a, model, 3)],
                         capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr
    assert main(_backmap_argv(cg, top, mp, b, model, 3)) == 0
    assert main(_backmap_argv(cg, top, mp, c, model, 4)) == 0
    assert a.read_bytes() == b.read_bytes(), "same inputs and seed gave different files"
    ca, cc = _coordinates(a), _coordinates(c)
    assert len(ca) == len(cc)
    differ = sum(x != y for x, y in zip(ca, cc))
    assert differ > len(ca) // 2, f"another seed changed only {differ} of {len(ca)} atoms"
    # everything but the coordinates is the same (titles, names, box)
    la, lc = a.read_text().splitlines(), c.read_text().splitlines()
    assert [x[:20] for x in la[2:-1]] == [x[:20] for x in lc[2:-1]] and la[-1] == lc[-1]


def test_backmap_reproducible_toy(toy_cg, tmp_path):
    model = train_config(_toy_config(tmp_path / "toy.toml", tmp_path / "run", toy_cg))
    _check_reproducible(tmp_path, toy_cg, DATA / "toy.top", DATA / "toy.map", model)


@pytest.mark.slow
def test_backmap_reproducible_sps(shared_data, tmp_path):
    """examples/sps/cg.gro with a tiny model (2 steps on 2 frames of the shared sPS training data)."""
    src = shared_data / "sps" / "t568_train"
    cfg = toy_config(tmp_path / "sps.toml", tmp_path / "run", src / "cg.xtc", name="sps-tiny", aa=src / "aa.xtc",
                     top=ROOT / "topologies" / "sps.top", map=ROOT / "mappings" / "sps.map", frames="0:2",
                     steps=2, checkpoint_every=2, constraints="all-bonds")
    model = train_config(cfg)
    _check_reproducible(tmp_path, ROOT / "examples" / "sps" / "cg.gro", ROOT / "topologies" / "sps.top",
                        ROOT / "mappings" / "sps.map", model)


# ----------------------------------------------------------------------------------------- kill/resume
STEPS = 40
CHECKPOINT_EVERY = 3


def _last_logged_step(log: Path) -> int:
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue  # a line being written
    return 0


def test_train_sigkill_then_resume_gives_same_weights(toy_cg, tmp_path):
    from safetensors.torch import load_file

    # reference: uninterrupted
    ref_cfg = _toy_config(tmp_path / "ref.toml", tmp_path / "ref", toy_cg, steps=STEPS,
                          checkpoint_every=CHECKPOINT_EVERY, seed=11)
    ref_model = train_config(ref_cfg)

    # the same config into another folder, killed at a random step after the first checkpoint
    cfg = _toy_config(tmp_path / "run.toml", tmp_path / "run", toy_cg, steps=STEPS,
                      checkpoint_every=CHECKPOINT_EVERY, seed=11)
    run = tmp_path / "run"
    kill_at = random.Random().randint(CHECKPOINT_EVERY + 1, STEPS - 8)
    argv = [sys.executable, "-m", "gmx_dbm", "-q", "train", str(cfg), "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "last.pt").exists() and _last_logged_step(run / "train_log.jsonl") >= kill_at:
                break
            time.sleep(0.01)
        killed_after = _last_logged_step(run / "train_log.jsonl")
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        f"the training was meant to be killed at step ~{kill_at}; it ended with {proc.returncode}: {err}")
    assert killed_after < STEPS, f"killed too late (step {killed_after})"
    assert not (run / "model.safetensors").exists()

    resume = [a for a in argv if a != "-q"] + ["--resume"]  # INFO says where it resumed
    res = subprocess.run(resume, capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr
    m = re.search(r"resumed from \S*last\.pt at step (\d+)", res.stderr)
    assert m, res.stderr
    assert CHECKPOINT_EVERY <= int(m.group(1)) <= killed_after and int(m.group(1)) % CHECKPOINT_EVERY == 0
    a, b = load_file(str(ref_model)), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"killed at step {killed_after} and resumed: tensors differ: {differ}"
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps[-1] == STEPS and set(steps) == set(range(1, STEPS + 1))
