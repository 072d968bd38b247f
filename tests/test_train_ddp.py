"""``gmx_dbm train`` under torchrun: two CPU processes (gloo, real torch.distributed), each launched as
``python -m torch.distributed.run --standalone --nproc-per-node 2 -m gmx_dbm train CONFIG``.

* the ranks hold the same weights at every checkpoint (the trainer compares them bit for bit and would
  stop; a separate run shows that the comparison catches a difference), and rank 0 alone writes the log;
* 2 ranks x half a batch make the same first update as 1 process x the whole batch: gradients (Adam's
  first moment, which with beta1 = 0 is the last gradient) and weights, within float tolerance;
* ``--resume`` under torchrun ends with the same weights, bit for bit, as an uninterrupted torchrun run.

The data: the sPS chain mixture of tests/data/sps_mix (38 beads of different sizes, so the ranks' shards
hold different numbers of atoms and Gibbs-sweep samples, which the loss weighting has to get right).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available in this torch build", allow_module_level=True)

from gmx_dbm.cli import main  # noqa: E402
from gmx_dbm.model.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIX = ROOT / "tests" / "data" / "sps_mix"

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

STEPS = 4
CHECKPOINT_EVERY = 2


def _config(path: Path, output: Path, steps=STEPS, validation=False, top="") -> Path:
    val = textwrap.dedent(f"""\
        [[validation]]
        aa = "{MIX / 'aa.gro'}"
        topology = "{MIX / 'topol.top'}"
        mapping = "{ROOT / 'mappings' / 'sps.map'}"
        """) if validation else ""
    path.write_text(textwrap.dedent(f"""\
        name = "ddp"
        output = "{output}"
        seed = 5
        {top}

        [[data]]
        aa = "{MIX / 'aa.gro'}"
        topology = "{MIX / 'topol.top'}"
        mapping = "{ROOT / 'mappings' / 'sps.map'}"

        """) + val + textwrap.dedent(f"""
        [grid]
        resolution = 4

        [model]
        g_width = 4
        g_blocks = 1
        c_width = 4
        c_blocks = 1

        [prior]
        mode = "p2"
        ramp_steps = 3

        [train]
        steps = {steps}
        beads_per_batch = 8
        critic_steps = 2
        gibbs_fraction = 0.5
        reconstruction_weight = 100.0
        reconstruction_steps = 5
        checkpoint_every = {CHECKPOINT_EVERY}
        validate_every = {CHECKPOINT_EVERY}
        log_every = 1
        threads = 1
        """))
    return path


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def _torchrun(*args, timeout=240) -> subprocess.CompletedProcess:
    """``--standalone``: a free rendezvous port, so that concurrent runs do not collide."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "gmx_dbm", "train", *map(str, args), "--no-progress"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)
    assert res.returncode == 0, res.stderr if len(res.stderr) < 12000 else res.stderr[:6000] + res.stderr[-6000:]
    return res


def _logged(run: Path) -> list:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A torchrun run of STEPS steps, checkpointed and validated every CHECKPOINT_EVERY."""
    d = tmp_path_factory.mktemp("ddp_full")
    cfg = _config(d / "c.toml", d / "run", validation=True)
    res = _torchrun(cfg)
    return {"dir": d / "run", "config": cfg, "stderr": res.stderr}


def test_ranks_agree_at_every_checkpoint_and_rank0_alone_writes(uninterrupted):
    run = uninterrupted["dir"]
    ck = load_checkpoint(run / "last.pt")
    assert int(ck["step"]) == STEPS
    n_values = sum(t.numel() for part in ("generator", "critic") for t in ck[part].values()) + 1
    agreed = [int(s) for s, n in re.findall(r"step (\d+): the 2 training processes agree on all (\d+) network "
                                            r"values", uninterrupted["stderr"]) if int(n) == n_values]
    assert agreed == list(range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY)), uninterrupted["stderr"][-3000:]
    # one log line per step (two writing ranks would double them), validated on the validation steps
    log = _logged(run)
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    assert all(("val0_bond_jsd" in r) == (r["step"] % CHECKPOINT_EVERY == 0) for r in log)
    assert (run / "model.safetensors").is_file()
    # rank 1 reports nothing but warnings: the INFO lines come once
    assert uninterrupted["stderr"].count("model written to") == 1


AGREE_WORKER = """
import sys, torch, torch.distributed as dist
from gmx_dbm.errors import GmxDbmError
from gmx_dbm.train.distributed import Group, launched
rank, size, local = launched()
dist.init_process_group("gloo", rank=rank, world_size=size)
g = Group(rank, size, local)
same = [torch.arange(6.0).reshape(2, 3), torch.full((4,), float("nan"))]
assert g.check_same(same) == 10
other = [t.clone() for t in same]
if rank == 1:
    other[0][1, 2] = torch.nextafter(other[0][1, 2], torch.tensor(10.0))   # one ulp
try:
    g.check_same(other, "weights")
except GmxDbmError as exc:
    print(f"rank {rank}: {exc}")
else:
    sys.exit(f"rank {rank}: a one-ulp difference passed")
dist.destroy_process_group()
"""


def test_rank_agreement_check_catches_one_ulp(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(AGREE_WORKER)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(worker)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=_env(), cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    for rank in (0, 1):   # every rank raises, so none goes on alone
        assert f"rank {rank}: the 2 training processes disagree on 1 of 10 weights" in res.stdout, res.stdout


@pytest.fixture(scope="module")
def one_step(tmp_path_factory) -> Path:
    """One step in this process, the whole batch: -> its output folder."""
    d = tmp_path_factory.mktemp("one_step")
    assert main(["-q", "train", str(_config(d / "one.toml", d / "one", steps=1)), "--no-progress"]) == 0
    return d / "one"


def test_two_ranks_with_half_batches_make_the_single_process_first_update(one_step, tmp_path):
    _torchrun(_config(tmp_path / "two.toml", tmp_path / "two", steps=1))
    a, b = load_checkpoint(one_step / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert int(a["step"]) == int(b["step"]) == 1
    for net, opt in (("generator", "opt_g"), ("critic", "opt_c")):
        names = [k for k in a[net] if not re.search(r"\._[uv]$", k)]   # parameters, in optimiser order
        grads_a = [a[opt]["state"][i]["exp_avg"] for i in range(len(names))]
        grads_b = [b[opt]["state"][i]["exp_avg"] for i in range(len(names))]
        scale = max(float(g.abs().max()) for g in grads_a)
        assert scale > 0
        for name, ga, gb in zip(names, grads_a, grads_b):
            assert ga.shape == gb.shape == a[net][name].shape, name
            # 1e-5 of the largest gradient: float noise (biases ahead of a GroupNorm or the softmax have
            # a gradient of exactly 0 in exact arithmetic and of ~1e-7 in float)
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-5 * scale, msg=f"{net} gradient {name}")
            # Adam's first step is lr * g / (|g| + eps): where g is float noise, its sign is chance
            signal = ga.abs() > 1e-5 * scale
            pa, pb = a[net][name], b[net][name]
            torch.testing.assert_close(pb[signal], pa[signal], rtol=1e-4, atol=1e-6, msg=f"{net} weight {name}")
        for name in a[net]:
            if name not in names:   # spectral-norm vectors: the same power iteration on the same weights
                torch.testing.assert_close(b[net][name], a[net][name], rtol=1e-4, atol=1e-6)
    # the log holds whole-batch means, whatever the shards
    la, lb = _logged(one_step)[0], _logged(tmp_path / "two")[0]
    assert la["samples"] == lb["samples"]
    for key in ("w_dist", "gp", "loss_g", "loss_prior", "rec_rms_nm", "mean_dev_nm", "e_bond", "e_lj"):
        assert lb[key] == pytest.approx(la[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_resume_under_torchrun_matches_the_uninterrupted_run(uninterrupted, tmp_path):
    from safetensors.torch import load_file

    cfg = _config(tmp_path / "c.toml", tmp_path / "run", validation=True)
    _torchrun(cfg, "--max-steps", CHECKPOINT_EVERY)
    assert int(load_checkpoint(tmp_path / "run" / "last.pt")["step"]) == CHECKPOINT_EVERY
    res = _torchrun(cfg, "--resume")
    assert re.search(rf"resumed from \S*last\.pt at step {CHECKPOINT_EVERY}\b", res.stderr), res.stderr[-3000:]
    a = load_file(str(uninterrupted["dir"] / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed at step {CHECKPOINT_EVERY}: tensors differ: {differ}"
    ca, cb = load_checkpoint(uninterrupted["dir"] / "last.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.equal(ca["critic"][k], cb["critic"][k]) for k in ca["critic"])
    assert torch.equal(ca["rng"], cb["rng"])
    assert [r["step"] for r in _logged(tmp_path / "run")] == list(range(1, STEPS + 1))


def test_mixed_precision_runs_the_networks_in_bf16_and_saves_float32(one_step, tmp_path):
    cfg = _config(tmp_path / "bf16.toml", tmp_path / "bf16", steps=1, top="mixed_precision = true")
    assert main(["-q", "train", str(cfg), "--no-progress"]) == 0
    a, b = load_checkpoint(one_step / "last.pt"), load_checkpoint(tmp_path / "bf16" / "last.pt")
    assert all(t.dtype == torch.float32 for t in b["generator"].values())
    ga = torch.cat([s["exp_avg"].flatten() for s in a["opt_g"]["state"].values()])
    gb = torch.cat([s["exp_avg"].flatten() for s in b["opt_g"]["state"].values()])
    assert torch.isfinite(gb).all()
    # bf16 keeps 8 bits of mantissa: the gradients move off the float32 ones, but not far
    rel = float((ga - gb).norm() / ga.norm())
    assert 1e-5 < rel < 0.25, rel


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_missing_device_is_an_input_error_naming_the_config_key(tmp_path, capsys):
    cfg = _config(tmp_path / "cuda.toml", tmp_path / "cuda", steps=1, top='device = "cuda"')
    assert main(["-q", "train", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "config key 'device'" in err and "no CUDA device" in err and err.count("\n") == 1
    assert not (tmp_path / "cuda").exists()
