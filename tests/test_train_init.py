"""`gmx_dbm train --init`: a starting config for the user's own files, checked against them, that the
trainer then reads and trains from."""
from __future__ import annotations

from pathlib import Path

import pytest

from gmx_dbm.cli import main
from gmx_dbm.train.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]
MIX = ROOT / "tests" / "data" / "sps_mix"


@pytest.mark.slow
def test_init_writes_a_config_the_trainer_reads_and_trains(tmp_path):
    cfg = tmp_path / "mine.toml"
    mdp = tmp_path / "md.mdp"
    mdp.write_text("integrator = sd\nconstraints = h-bonds\n")
    assert main(["train", "--init", str(cfg), "-f", str(MIX / "aa.xtc"), "-p", str(MIX / "topol.top"),
                 "-m", str(ROOT / "mappings" / "sps.map"), "--mdp", str(mdp), "--steps", "2"]) == 0
    c = resolve_config(cfg)
    assert c.name == "mine" and c.constraints == "h-bonds" and c.chemically_specific
    assert c.data[0].cg == [] and Path(c.data[0].topology) == (MIX / "topol.top").resolve()
    assert c.train.steps == 2 and Path(c.output) == tmp_path / "runs" / "mine"
    # the trainer maps the all-atom frames itself (no cg files) and writes a model
    assert main(["train", str(cfg), "--no-progress"]) == 0
    assert (tmp_path / "runs" / "mine" / "model.safetensors").is_file()


def test_init_refuses_frames_of_another_system_and_writes_nothing(tmp_path, capsys):
    cfg = tmp_path / "mine.toml"
    assert main(["train", "--init", str(cfg), "-f", str(ROOT / "examples" / "sps" / "cg.gro"), "-p",
                 str(MIX / "topol.top"), "-m", str(ROOT / "mappings" / "sps.map")]) == 2
    err = capsys.readouterr().err
    assert "cg.gro" in err and "310" in err and err.count("\n") == 1
    assert not cfg.exists()


def test_init_needs_frames_topology_and_mapping(tmp_path, capsys):
    assert main(["train", "--init", str(tmp_path / "x.toml"), "-p", str(MIX / "topol.top")]) == 2
    assert "--init needs -f, -m" in capsys.readouterr().err
