"""Typed training configuration read from TOML (or YAML if PyYAML is installed).

Unknown or misspelled keys are errors that list the valid ones; wrong types name the key. Relative
paths are relative to the config file; ``$VARS`` in paths are expanded. ``resolve_config`` is the only
reader: the rest of the package gets dataclasses, and the resolved dict is saved in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError


@dataclass
class DataSet:
    aa: list                     # all-atom trajectories (.xtc/.gro), globs allowed
    topology: str
    mapping: list
    cg: list = field(default_factory=list)   # matching CG trajectories, same order and frames; none: mapped from aa
    frames: str = ":"            # python-style slice over the concatenated frames, e.g. "0:30" or "::2"
    cg_frames: str = ""          # slice for the CG frames when they are offset from the all-atom ones


@dataclass
class GridConfig:
    resolution: int = 8
    length: float = 1.2
    sigma: float = 0.1
    cutoff: float = 0.7


@dataclass
class FeatureConfig:
    atom_types: list = field(default_factory=list)     # empty: all types of the training topologies
    bead_types: list = field(default_factory=list)     # empty: all (aliased) bead types of the mappings
    bead_type_alias: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    size: str = "compact"        # compact | large
    g_width: int = 0             # 0: from size
    g_blocks: int = 0
    c_width: int = 0
    c_blocks: int = 0
    noise_dim: int = 0


@dataclass
class PriorConfig:
    mode: str = "none"           # none | p1 (minimise) | p2 (match the reference)
    bonded_weight: float = 4e-3
    lj_weight: float = 4e-2
    ramp_start: int = 0          # steps before the prior is switched on
    ramp_steps: int = 1000       # linear ramp from 0 to the weights


@dataclass
class TrainConfig:
    steps: int = 1000
    beads_per_batch: int = 32
    critic_steps: int = 5
    lr_generator: float = 5e-5
    lr_critic: float = 1e-4
    lambda_gp: float = 0.1
    gibbs_fraction: float = 0.5  # share of beads trained with a Gibbs-sweep environment
    reconstruction_weight: float = 0.0   # L2 warm-up on Gibbs-sweep samples (nm^-2), decays linearly ...
    reconstruction_steps: int = 0        # ... to zero at this step
    checkpoint_every: int = 100
    validate_every: int = 100
    log_every: int = 10
    threads: int = 0             # 0: torch default
    # steps whose generator weights are kept as step_NNNNNNN.safetensors in the output folder: a retrained
    # prefix of the run can be compared with them (the shipped models' reproducibility test)
    keep_steps: list = field(default_factory=list)


@dataclass
class Config:
    name: str
    output: str
    data: list
    validation: list = field(default_factory=list)
    seed: int = 0
    # cpu | cuda | cuda:N: where the networks, the featuriser, batches and losses run (the per-frame
    # neighbour search stays on the host); under torchrun "cuda" gives rank r cuda:(LOCAL_RANK % GPUs)
    device: str = "cpu"
    # bf16 autocast around the generator and critic forward passes (weights, optimiser, losses and saved
    # files stay float32); allowed on the CPU too, where it pays only on CPUs with bf16 units
    mixed_precision: bool = False
    constraints: str = "none"            # bonds the reference MD constrained: none | h-bonds | all-bonds
    chemically_specific: bool = False    # only backmap the molecules it was trained on
    grid: GridConfig = field(default_factory=GridConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"grid": GridConfig, "features": FeatureConfig, "model": ModelConfig, "prior": PriorConfig,
             "train": TrainConfig}


def _check_type(value, typ, key, path):
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool),
          list: lambda v: isinstance(v, list), dict: lambda v: isinstance(v, dict)}
    check = ok.get(typ)
    if check is not None and not check(value):
        raise ConfigError(f"key '{key}' must be {typ.__name__}, got {type(value).__name__} {value!r}", path=path)
    return float(value) if typ is float else value


def _build(cls, raw: dict, prefix: str, path):
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix}' must be a table", path=path)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; valid keys: "
                          f"{', '.join(prefix + k for k in fields)}", path=path)
    kwargs = {}
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for k, v in raw.items():
        typ = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}.get(hints[k])
        kwargs[k] = _check_type(v, typ, prefix + k, path) if typ else v
    missing = [f.name for f in fields.values() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and f.name not in kwargs]
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(prefix + k for k in missing)}", path=path)
    return cls(**kwargs)


def _resolve_path(p: str, base: Path, key: str, path, must_exist=True, allow_glob=False) -> list:
    expanded = os.path.expandvars(os.path.expanduser(p))
    full = expanded if os.path.isabs(expanded) else str(base / expanded)
    if allow_glob and any(ch in full for ch in "*?["):
        hits = sorted(glob.glob(full))
        if not hits:
            raise ConfigError(f"'{key}': no file matches {p!r}", path=path)
        return hits
    if must_exist and not os.path.exists(full):
        raise ConfigError(f"'{key}': file not found: {full}", path=path)
    return [os.path.normpath(full)]


def _dataset(raw: dict, base: Path, prefix: str, path) -> DataSet:
    ds = _build(DataSet, {k: ([v] if k in ("aa", "cg", "mapping") and isinstance(v, str) else v)
                          for k, v in raw.items()}, prefix, path)
    aa = [f for p in ds.aa for f in _resolve_path(p, base, prefix + "aa", path, allow_glob=True)]
    cg = [f for p in ds.cg for f in _resolve_path(p, base, prefix + "cg", path, allow_glob=True)]
    if cg and len(aa) != len(cg):
        raise ConfigError(f"'{prefix}aa' and '{prefix}cg' name different numbers of files ({len(aa)} vs {len(cg)})",
                          path=path)
    top = _resolve_path(ds.topology, base, prefix + "topology", path)[0]
    maps = [_resolve_path(m, base, prefix + "mapping", path)[0] for m in ds.mapping]
    for key in ("frames", "cg_frames"):
        value = getattr(ds, key)
        if key == "cg_frames" and not value:
            continue
        try:
            parse_slice(value)
        except ValueError:
            raise ConfigError(f"'{prefix}{key}' must be a slice like '0:30' or '::2', got {value!r}", path=path)
    return DataSet(aa=aa, cg=cg, topology=top, mapping=maps, frames=ds.frames, cg_frames=ds.cg_frames)


def parse_slice(text: str) -> slice:
    parts = text.split(":")
    if len(parts) > 3 or not text.strip():
        raise ValueError(text)
    vals = [int(p) if p.strip() else None for p in parts]
    if len(vals) == 1:
        return slice(vals[0], vals[0] + 1)
    return slice(*vals)


def load_config_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text; expected a TOML (or YAML) config", path=path) from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("YAML configs need PyYAML (pip install pyyaml); or use TOML", path=path)
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            raise ConfigError(f"invalid YAML: {exc}", path=path, line=None if line is None else line + 1)
    else:
        import tomllib
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", path=path)
    if not isinstance(raw, dict):
        raise ConfigError("config must be a table of keys", path=path)
    return raw


def resolve_config(path) -> Config:
    """Read and check a config file; returns a Config with absolute paths."""
    path = Path(path).resolve()
    raw = load_config_file(path)
    base = path.parent
    top_fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - top_fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(top_fields))}",
                          path=path)
    for k in ("name", "data"):
        if k not in raw:
            raise ConfigError(f"missing key '{k}'", path=path)
    sections = {k: _build(cls, raw.get(k, {}), k + ".", path) for k, cls in _SECTIONS.items()}
    if not isinstance(raw["data"], list) or not raw["data"]:
        raise ConfigError("'data' must be a non-empty list of [[data]] tables", path=path)
    data = [_dataset(d, base, f"data[{i}].", path) for i, d in enumerate(raw["data"])]
    val = [_dataset(d, base, f"validation[{i}].", path) for i, d in enumerate(raw.get("validation", []))]
    output = raw.get("output", f"runs/{raw['name']}")
    _check_type(output, str, "output", path)
    cfg = Config(name=_check_type(raw["name"], str, "name", path),
                 output=os.path.normpath(str(base / os.path.expandvars(output))),
                 data=data, validation=val,
                 seed=_check_type(raw.get("seed", 0), int, "seed", path),
                 device=_check_type(raw.get("device", "cpu"), str, "device", path),
                 mixed_precision=_check_type(raw.get("mixed_precision", False), bool, "mixed_precision", path),
                 constraints=_check_type(raw.get("constraints", "none"), str, "constraints", path),
                 chemically_specific=_check_type(raw.get("chemically_specific", False), bool,
                                                 "chemically_specific", path),
                 **sections)
    if cfg.prior.mode not in ("none", "p1", "p2"):
        raise ConfigError(f"prior.mode must be none, p1 or p2, got {cfg.prior.mode!r}", path=path)
    if cfg.constraints not in ("none", "h-bonds", "all-bonds"):
        raise ConfigError(f"constraints must be none, h-bonds or all-bonds, got {cfg.constraints!r}", path=path)
    if cfg.model.size not in ("compact", "large"):
        raise ConfigError(f"model.size must be compact or large, got {cfg.model.size!r}", path=path)
    if not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in cfg.train.keep_steps):
        raise ConfigError(f"train.keep_steps must be a list of positive step numbers, got {cfg.train.keep_steps!r}",
                          path=path)
    if cfg.device not in ("cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device must be cpu or cuda, got {cfg.device!r}", path=path)
    return cfg
