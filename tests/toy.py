"""The toy system of the tests (tests/data/toy.*): one parametrisable training config for a tiny model,
its writer ``toy_config`` and ``build_toy_model`` (map the toy .gro to CG, write the config, train).

Imported by the tests (``from toy import ...``: pytest puts tests/ on sys.path for tests/conftest.py) and
by benchmarks/bench_memory.py (which puts tests/ on sys.path itself). No pytest or torch import here.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

# {top_lines}, {data_lines} and {train_lines} are optional lines (empty when not asked for), so that a
# config holds only the keys a caller sets; everything else is the smallest model that trains.
TOY_CONFIG = """\
name = "{name}"
output = "{output}"
seed = {seed}
{top_lines}
[[data]]
aa = "{aa}"
cg = "{cg}"
topology = "{top}"
mapping = "{map}"
{data_lines}
[grid]
resolution = {resolution}

[model]
g_width = 4
g_blocks = 1
c_width = 4
c_blocks = 1

[train]
steps = {steps}
beads_per_batch = 4
critic_steps = 1
checkpoint_every = {checkpoint_every}
validate_every = 1000
{train_lines}
"""


def toy_config(path, output, cg, *, name="toy", seed=1, aa=DATA / "toy.gro", top=DATA / "toy.top",
               map=DATA / "toy.map", frames=None, constraints=None, resolution=4, steps=6, checkpoint_every=3,
               log_every=1, threads=1, extra_top="", extra_train="") -> Path:
    """Write a tiny-model training config to ``path`` and return it. ``seed`` is inserted as written
    (``seed='"1"'`` makes a wrong-type config); ``frames``, ``constraints``, ``log_every`` and ``threads``
    are left out when None (the config defaults apply); ``extra_top``/``extra_train``: raw lines added
    to the top level / the [train] section."""
    top_lines = [f'constraints = "{constraints}"'] if constraints is not None else []
    top_lines += [extra_top] if extra_top else []
    data_lines = [f'frames = "{frames}"'] if frames is not None else []
    train_lines = [f"log_every = {log_every}"] if log_every is not None else []
    train_lines += [f"threads = {threads}"] if threads is not None else []
    train_lines += [extra_train] if extra_train else []
    Path(path).write_text(TOY_CONFIG.format(
        name=name, output=output, seed=seed, aa=aa, cg=cg, top=top, map=map, resolution=resolution, steps=steps,
        checkpoint_every=checkpoint_every, top_lines="\n".join(top_lines), data_lines="\n".join(data_lines),
        train_lines="\n".join(train_lines)))
    return Path(path)


def map_toy_cg(out) -> Path:
    """tests/data/toy.gro mapped to CG (``gmx_dbm map``) into ``out``."""
    from gmx_dbm.cli import main
    out = Path(out)
    assert main(["-q", "map", "-f", str(DATA / "toy.gro"), "-p", str(DATA / "toy.top"),
                 "-m", str(DATA / "toy.map"), "-o", str(out)]) == 0
    return out


def train_config(cfg) -> Path:
    """Train in this process; -> the exported model file."""
    from gmx_dbm.train.loop import train
    return train(cfg, progress=False)


def build_toy_model(d, **config) -> dict:
    """In folder ``d``: toy_cg.gro (the toy frame mapped), toy.toml (``toy_config(..., **config)``, output
    d/run) and the trained model. -> {"dir", "cg", "model", "config"}."""
    d = Path(d)
    cg = map_toy_cg(d / "toy_cg.gro")
    cfg = toy_config(d / "toy.toml", d / "run", cg, **config)
    return {"dir": d, "cg": cg, "model": train_config(cfg), "config": cfg}
