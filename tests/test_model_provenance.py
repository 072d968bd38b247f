"""Shipped models and the training runs behind them are reproducible from the committed configs.

* For each training run documented in ``docs/training/`` (its own log, ``NAME_train_log.jsonl``) with a
  kept prefix in ``tests/data/prefix/`` (the run's generator weights at an early step): training the
  committed ``examples/train/NAME.toml`` from scratch for that many steps gives the same weights and the
  same logged losses at that step as the run did.
* A shipped model that records its provenance was made by the committed config file (sha256) and is the
  step its run's log ends with; models trained before runs recorded a config hash are skipped, saying so.

Retraining needs the shared reference data (the configs' training frames); one CPU thread, as the
configs ask, because the guarantee is for a fixed thread count and machine.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gmx_dbm.model.checkpoint import file_sha256, read_model_meta  # noqa: E402
from gmx_dbm.train.curves import read_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "docs" / "training"
PREFIX = ROOT / "tests" / "data" / "prefix"
CONFIGS = ROOT / "examples" / "train"
MODEL_DIR = ROOT / "gmx_dbm" / "data" / "models"

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

# logged numbers that depend on the machine's speed, not on the weights
_TIMING = ("samples_per_s",)


def _prefixes() -> list:
    return sorted(PREFIX.glob("*_step_*.safetensors"))


def _shipped() -> list:
    return sorted(p.stem for p in MODEL_DIR.glob("*.safetensors"))


def test_every_documented_run_has_a_committed_config_and_prefix():
    logs = sorted(TRAINING.glob("*_train_log.jsonl"))
    assert logs, "no training run documented in docs/training"
    for log in logs:
        name = log.name[:-len("_train_log.jsonl")]
        assert (CONFIGS / f"{name}.toml").is_file(), f"{log.name}: no examples/train/{name}.toml"
        assert list(PREFIX.glob(f"{name}_step_*.safetensors")), f"{log.name}: no kept prefix in tests/data/prefix"


def _run_vendor(name: str) -> str:
    """The CPU vendor a documented run trained on, from the history its shipped model or its committed
    checkpoint (``docs/training/NAME_last.pt``) records; '' where neither says."""
    from gmx_dbm.model.checkpoint import load_checkpoint
    from gmx_dbm.train.loop import _kernels_of
    histories = []
    if (MODEL_DIR / f"{name}.safetensors").is_file():
        histories.append(read_model_meta(MODEL_DIR / f"{name}.safetensors").get("history") or [])
    if (TRAINING / f"{name}_last.pt").is_file():
        histories.append(json.loads(load_checkpoint(TRAINING / f"{name}_last.pt").get("history", "[]")))
    for stretch in (h for history in histories for h in history):
        vendor = _kernels_of(stretch).get("vendor")
        if vendor:
            return vendor
    return ""


@pytest.mark.parametrize("prefix", _prefixes(), ids=lambda p: p.stem)
def test_retraining_the_committed_config_reproduces_the_runs_prefix(shared_data, tmp_path, prefix):
    from gmx_dbm.model.checkpoint import load_model
    from gmx_dbm.train.config import resolve_config
    from gmx_dbm.train.loop import Trainer

    from gmx_dbm.devices import cpu_vendor

    name, step = prefix.stem.rsplit("_step_", 1)
    step = int(step)
    run_vendor, here = _run_vendor(name), cpu_vendor()
    if run_vendor and here and run_vendor != here:
        pytest.skip(f"the {name} run was trained on an {run_vendor} CPU and this one is {here}: MKL's kernels "
                    f"differ between CPU vendors, so retraining repeats the run to the bit only on {run_vendor} "
                    "CPUs (gmx_dbm.devices.cpu_vendor)")
    config = CONFIGS / f"{name}.toml"
    logged = {r["step"]: r for r in read_log(TRAINING / f"{name}_train_log.jsonl")}
    assert step in logged, f"the run's log has no record of step {step}"
    kept, meta = load_model(prefix)
    assert meta["steps"] == step

    cfg = resolve_config(config)
    cfg.output = str(tmp_path / "run")
    trainer = Trainer(cfg, config_sha256=file_sha256(config))
    for _ in range(step):
        rec = trainer.train_step()
    rec = trainer.log_record(rec)

    for key, value in logged[step].items():
        if key in _TIMING or key.startswith("val") or key == "step":
            continue
        assert math.isclose(rec[key], value, rel_tol=1e-6, abs_tol=1e-9), \
            f"step {step} {key}: retrained {rec[key]!r}, the run logged {value!r}"
    state = trainer.gen.state_dict()
    for key, ref in kept.state_dict().items():
        assert torch.allclose(state[key], ref, rtol=1e-5, atol=1e-7), f"generator tensor {key} differs after {step} steps"
    # and the check can fail: one more step moves the weights
    trainer.train_step()
    moved = trainer.gen.state_dict()
    assert any(not torch.allclose(moved[k], v, rtol=1e-5, atol=1e-7) for k, v in kept.state_dict().items())


@pytest.mark.parametrize("name", _shipped())
def test_shipped_model_was_made_by_its_committed_config(name):
    meta = read_model_meta(MODEL_DIR / f"{name}.safetensors")
    if not meta.get("config_sha256"):
        pytest.skip(f"model {name!r} was trained before runs recorded their config hash (its card says so)")
    config = CONFIGS / f"{name}.toml"
    assert config.is_file(), f"no examples/train/{name}.toml"
    assert file_sha256(config) == meta["config_sha256"], \
        f"examples/train/{name}.toml changed since model {name!r} was trained"
    history = meta.get("history") or []
    assert history and history[-1]["to_step"] == meta["steps"]
    assert all(h["config_sha256"] == meta["config_sha256"] for h in history)
    # consecutive stretches of one run, no gap
    assert all(a["to_step"] == b["from_step"] for a, b in zip(history, history[1:]))
    log = TRAINING / f"{name}_train_log.jsonl"
    assert log.is_file(), f"no docs/training/{log.name}"
    assert read_log(log)[-1]["step"] == meta["steps"], "the documented log does not end at the shipped step"
    card = (MODEL_DIR / f"{name}.md").read_text()
    assert meta["config_sha256"] in card and f"{name}_learning_curves.png" in card


def test_learning_curves_of_a_log(tmp_path):
    from gmx_dbm.train.curves import curves, plot_learning_curves
    log = tmp_path / "train_log.jsonl"
    recs = [{"step": 10, "w_dist": 1.0, "rec_rms_nm": 0.2},
            {"step": 20, "w_dist": 0.5, "rec_rms_nm": 0.1, "val0_angle_jsd": 0.3, "val0_e_lj_rel": -2.0,
             "val0_clashes": 4},
            {"step": 20, "w_dist": 0.4, "rec_rms_nm": 0.1, "val0_angle_jsd": 0.25, "val0_e_lj_rel": -1.0,
             "val0_clashes": 3}]
    log.write_text("\n".join(json.dumps(r) for r in recs) + "\n{\"step\": 3")   # last line cut by a kill
    panels = curves(read_log(log))
    # the later record of a repeated step wins (a resumed run logs a few steps twice)
    assert panels["adversarial"]["w_dist"] == ([10, 20], [1.0, 0.4])
    assert panels["validation 0: JSD"]["angle"] == ([20], [0.25])
    assert panels["validation 0: |energy error| / |reference|"]["lj"] == ([20], [1.0])
    assert panels["validation 0: per frame"]["clashes"] == ([20], [3.0])
    png = plot_learning_curves(log, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert plot_learning_curves(empty, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("checkpoint", sorted(TRAINING.glob("*_last.pt")), ids=lambda p: p.stem)
def test_a_committed_checkpoint_continues_its_configs_run(checkpoint):
    """docs/training/NAME_last.pt: loads without running code, was made by the committed config alone, and
    its step is one the run's log has reached (the log may be ahead)."""
    from gmx_dbm.model.checkpoint import load_checkpoint
    name = checkpoint.stem[: -len("_last")]
    ck = load_checkpoint(checkpoint)
    history = json.loads(ck["history"])
    assert history and history[0]["from_step"] == 0 and history[-1]["to_step"] == ck["step"]
    assert {h["config_sha256"] for h in history} == {file_sha256(CONFIGS / f"{name}.toml")}
    logged = {r["step"] for r in read_log(TRAINING / f"{name}_train_log.jsonl")}
    assert ck["step"] <= max(logged)
