"""Training configs and the smoke example end to end."""
from __future__ import annotations

import json

import pytest
import torch

from gmx_dbm.cli import main
from gmx_dbm.io import read_frame
from gmx_dbm.model.checkpoint import load_checkpoint, load_model
from gmx_dbm.train.config import resolve_config

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.mark.parametrize("config", ["smoke/config.toml", "train/sps.toml", "train/transfer.toml"])
def test_example_configs_resolve(root, shared_data, config):
    cfg = resolve_config(root / "examples" / config)
    assert cfg.data and all(ds.aa and len(ds.aa) == len(ds.cg) for ds in cfg.data)
    assert cfg.prior.mode in ("none", "p1", "p2")


@pytest.mark.slow
def test_smoke_example_trains_and_its_model_backmaps(root, shared_data, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "train", str(root / "examples/smoke/config.toml"), "-o", str(out), "--no-progress"]) == 0
    model = out / "model.safetensors"
    gen, meta = load_model(model)
    assert meta["name"] == "smoke" and meta["steps"] == resolve_config(root / "examples/smoke/config.toml").train.steps
    # the resolved config and the file hashes travel in the model and in the checkpoint
    assert meta["config"]["train"]["steps"] == meta["steps"] and meta["hashes"]
    ck = load_checkpoint(out / "last.pt")
    assert json.loads(ck["config"])["name"] == "smoke" and int(ck["step"]) == meta["steps"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log and all(torch.isfinite(torch.tensor(r["loss_g"])) for r in log)
    aa = tmp_path / "aa.gro"
    assert main(["-q", "backmap", "-c", str(root / "examples/sps/cg.gro"), "-p", str(root / "topologies/sps.top"),
                 "-m", str(root / "mappings/sps.map"), "-o", str(aa), "--model", str(model), "--gibbs", "0",
                 "--no-quality"]) == 0
    assert read_frame(aa).n_atoms == 5832


def test_transfer_config_trains_a_step_on_octane_and_cumene(root, shared_data, tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "train", str(root / "examples/train/transfer.toml"), "-o", str(out), "--max-steps", "1",
                 "--no-progress"]) == 0
    _, meta = load_model(out / "model.safetensors")
    assert meta["spec"]["bead_type_alias"] == {"BB": "B", "SC": "A"}
    assert sorted(meta["spec"]["bead_types"]) == ["A", "B"]
