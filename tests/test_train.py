"""Training configs and the smoke example end to end."""
from __future__ import annotations

import json
import os

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


def _validate_on(cfg, aa, cg, every: int) -> None:
    """Give the toy config ``cfg`` a validation set (``aa``/``cg`` on the toy topology and mapping) and
    validate every ``every`` steps."""
    from toy import DATA
    cfg.write_text(cfg.read_text().replace("validate_every = 1000", f"validate_every = {every}") +
                   f'\n[[validation]]\naa = "{aa}"\ncg = "{cg}"\n'
                   f'topology = "{DATA / "toy.top"}"\nmapping = "{DATA / "toy.map"}"\n')


def test_run_records_its_history_keeps_steps_and_warns_of_a_changed_config(toy_cg, tmp_path, caplog):
    """A run keeps the generator at ``train.keep_steps``, records config hash, steps, wall time and machine
    of each stretch (checkpoint and model), draws its learning curves, and warns when resumed with an
    edited config."""
    from toy import DATA, toy_config

    from gmx_dbm.model.checkpoint import file_sha256
    cfg = toy_config(tmp_path / "toy.toml", tmp_path / "run", toy_cg, steps=6, checkpoint_every=3,
                     extra_train="keep_steps = [2]")
    _validate_on(cfg, DATA / "toy.gro", toy_cg, every=3)
    assert main(["-q", "train", str(cfg), "--max-steps", "3", "--no-progress"]) == 0
    run = tmp_path / "run"
    kept, kept_meta = load_model(run / "step_0000002.safetensors")
    assert kept_meta["steps"] == 2 and kept_meta["config_sha256"] == file_sha256(cfg)
    _, meta = load_model(run / "model.safetensors")
    assert not any(torch.equal(a, b) for a, b in zip(kept.state_dict().values(),
                                                     load_model(run / "model.safetensors")[0].state_dict().values())
                   if a.dtype.is_floating_point and a.numel() > 8)
    (first,) = meta["history"]
    assert (first["from_step"], first["to_step"], first["config_sha256"]) == (0, 3, file_sha256(cfg))
    assert first["wall_s"] > 0 and first["threads"] == 1 and first["device"] == "cpu" and first["cpu"]
    assert json.loads(load_checkpoint(run / "last.pt")["history"]) == meta["history"]
    assert (run / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    rec = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()][-1]
    assert {"val0_bond_jsd", "val0_clashes", "val0_deformed_rings", "val0_e_angle_rel", "val0_e_lj_rel"} <= set(rec)

    # the config edited (more steps) between the stretches: a second history entry and a warning
    cfg.write_text(cfg.read_text().replace("steps = 6", "steps = 5"))
    caplog.clear()
    assert main(["train", str(cfg), "--resume", "--no-progress"]) == 0
    assert "the config file changed since earlier steps of this run" in caplog.text
    _, meta = load_model(run / "model.safetensors")
    assert [(h["from_step"], h["to_step"]) for h in meta["history"]] == [(0, 3), (3, 5)]
    assert meta["history"][1]["config_sha256"] == meta["config_sha256"] == file_sha256(cfg) != first["config_sha256"]
    assert first["cpu_kernels"]["aten"] == torch.backends.cpu.get_cpu_capability()

    # a checkpoint whose earlier steps ran on other CPU kernels: resuming warns
    ck = load_checkpoint(run / "last.pt")
    history = json.loads(ck["history"])
    history[0]["cpu_kernels"] = {**history[0]["cpu_kernels"], "aten": "DEFAULT"}
    ck["history"] = json.dumps(history)
    torch.save(ck, run / "last.pt")
    cfg.write_text(cfg.read_text().replace("steps = 5", "steps = 6"))
    caplog.clear()
    assert main(["train", str(cfg), "--resume", "--no-progress"]) == 0
    assert "earlier steps of this run used other CPU kernels" in caplog.text


def test_validation_on_a_box_too_thin_for_the_force_field_keeps_training(toy_cg, tmp_path, caplog):
    """A validation frame whose box is thinner than twice the force field's cut-off: a warning, JSDs only,
    and the run goes on (an error there would end a long run at its first validation)."""
    from toy import DATA, toy_config
    lines = (DATA / "toy.gro").read_text().splitlines()
    lines[-1] = "   1.80000   1.80000   1.80000"
    thin = tmp_path / "thin.gro"
    thin.write_text("\n".join(lines) + "\n")
    thin_cg = tmp_path / "thin_cg.gro"
    assert main(["-q", "map", "-f", str(thin), "-p", str(DATA / "toy.top"), "-m", str(DATA / "toy.map"),
                 "-o", str(thin_cg)]) == 0
    cfg = toy_config(tmp_path / "toy.toml", tmp_path / "run", toy_cg, steps=2, checkpoint_every=2)
    _validate_on(cfg, thin, thin_cg, every=2)
    caplog.clear()
    assert main(["train", str(cfg), "--no-progress"]) == 0
    assert "validation set 0: no energies or clashes validated" in caplog.text
    rec = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()][-1]
    assert "val0_bond_jsd" in rec and "val0_e_lj_rel" not in rec


def test_log_records_are_strict_json():
    """A value undefined at a step (NaN: the bond JSD when every bond is constrained) is written as null,
    so that strict JSON readers (jq, JavaScript) read the training log."""
    from gmx_dbm.train.loop import _json_record

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    rec = strict(_json_record({"step": 3, "val0_bond_jsd": float("nan"), "w": float("inf"), "loss_g": -1.5}))
    assert rec == {"step": 3, "val0_bond_jsd": None, "w": None, "loss_g": -1.5}
    # the learning curves skip such values (a validation energy undefined at one step included)
    from gmx_dbm.train.curves import curves
    panels = curves([rec, {"step": 4, "val0_bond_jsd": 0.2, "val0_e_lj_rel": None},
                     {"step": 5, "val0_e_lj_rel": -0.1}])
    assert panels["validation 0: JSD"]["bond"] == ([4], [0.2])
    assert panels["validation 0: |energy error| / |reference|"]["lj"] == ([5], [0.1])


def test_cpu_vendor_of_names_and_of_history_records_without_it():
    from gmx_dbm.devices import cpu_kernels, cpu_vendor
    from gmx_dbm.train.loop import _kernels_of, _same_kernels
    assert cpu_vendor("AMD EPYC 7B13 64-Core Processor") == "AMD"
    assert cpu_vendor("Intel(R) Xeon(R) Processor") == "Intel"
    assert cpu_vendor("Apple M2") == ""
    assert cpu_kernels()["vendor"] == cpu_vendor()
    # a stretch recorded before the vendor key: taken from its processor name
    old = {"cpu": "AMD EPYC", "cpu_kernels": {"aten": "AVX2", "onednn": "AVX2", "mkl": "AVX2"}}
    assert _kernels_of(old) == {"aten": "AVX2", "onednn": "AVX2", "mkl": "AVX2", "vendor": "AMD"}
    assert _kernels_of({"cpu": "AMD EPYC"}) == {"vendor": "AMD"}
    assert _kernels_of({"cpu": "Apple M2", "cpu_kernels": "NEON"}) == {"aten": "NEON"}
    intel = {"vendor": "Intel", "aten": "AVX2", "onednn": "AVX2", "mkl": "AVX2"}
    assert not _same_kernels(_kernels_of(old), intel)
    assert _same_kernels(_kernels_of(old), {**intel, "vendor": "AMD"})


def test_pin_cpu_kernels_keeps_the_users_own_settings(monkeypatch):
    import platform

    from gmx_dbm.devices import REPRODUCIBLE_CPU_KERNELS, pin_cpu_kernels
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    env = {"DNNL_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}
    assert pin_cpu_kernels(env, flags={"avx2", "fma", "avx512f"}) == {
        "ATEN_CPU_CAPABILITY": REPRODUCIBLE_CPU_KERNELS["ATEN_CPU_CAPABILITY"]}
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX512" and "ONEDNN_MAX_CPU_ISA" not in env
    # a CPU without AVX2 would die of an illegal instruction under ATEN_CPU_CAPABILITY=avx2: nothing is set
    env = {}
    assert pin_cpu_kernels(env, flags={"sse4_2", "avx"}) == {} and env == {}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert pin_cpu_kernels(env, flags={"avx2", "fma"}) == {} and env == {}


def _has_avx2() -> bool:
    from gmx_dbm.devices import _cpu_flags
    import platform
    return platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= _cpu_flags()


def test_the_command_line_imports_no_torch_before_the_train_command_pins_the_kernels():
    """The pin works only before the process's first tensor operation: neither the CLI nor any command
    module may import torch at module level."""
    import subprocess
    import sys
    code = ("import sys, gmx_dbm.cli as c; c.build_parser(); import gmx_dbm.devices; "
            "print(sorted(m for m in ('torch', 'numpy', 'parmed', 'MDAnalysis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not _has_avx2(), reason="not an x86-64 CPU with AVX2 and FMA: no kernels to pin")
def test_the_train_command_runs_on_the_pinned_kernels(tmp_path, monkeypatch):
    """`gmx_dbm train` in a fresh process (the user's environment without the settings): the trainer sees
    torch's AVX2 kernels whatever the CPU has."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                            "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    # the trainer replaced by a module that reports the kernels, so that nothing is trained
    code = ("import argparse, sys, types\n"
            "fake = types.ModuleType('gmx_dbm.train.loop')\n"
            "def train(*a, **k):\n"
            "    from gmx_dbm.devices import cpu_kernels; k = cpu_kernels(); k.pop('vendor'); print(k)\n"
            "    return 'model'\n"
            "fake.train = train\n"
            "sys.modules['gmx_dbm.train.loop'] = fake\n"
            "from gmx_dbm.commands import train as cmd\n"
            "cmd.run(argparse.Namespace(init=False, config='c.toml', resume=False, max_steps=None,"
            " no_progress=True, output=None))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str({"aten": "AVX2", "onednn": "AVX2", "mkl": "AVX2"})
