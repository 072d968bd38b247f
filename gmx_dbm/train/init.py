"""``gmx_dbm train --init``: a starting training config for the user's own files.

The files are read once here (topology, mapping, the first all-atom frame), so that a config that would
fail at the start of training fails now, with the file and line; the config holds paths relative to
itself and the settings the shipped sPS models were trained with.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

TEMPLATE = """# Training config for gmx_dbm (written by `gmx_dbm train --init`; docs/NEW_SYSTEM.md).
# Paths are relative to this file. Train with `gmx_dbm train {config}` (resume with --resume);
# the model is written to the output folder as model.safetensors.
name = "{name}"
output = "{output}"
seed = 7
constraints = "{constraints}"    # bonds your all-atom MD constrained: none | h-bonds | all-bonds{constraints_note}
chemically_specific = true       # backmap only molecules whose beads it has seen in training

{data}
[model]
size = "compact"                 # "large": a wider network, slower per step

[prior]
mode = "p2"                      # force-field energy prior on the generated atoms
bonded_weight = 0.05
lj_weight = 0.05
ramp_steps = 200

[train]
steps = {steps}                     # on 2 CPU cores, 1800 steps of the sPS model took about an hour
reconstruction_weight = 3000.0
reconstruction_steps = 3000
beads_per_batch = 24
critic_steps = 2
lr_generator = 4e-4
lr_critic = 3e-4
checkpoint_every = 50
validate_every = 200
log_every = 10
threads = 0                      # 0: torch's default
"""


def _rel(path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base)).as_posix()


def _dataset(kind: str, aa: list, cg: list | None, topology, mapping: list, base: Path) -> str:
    lines = [f"[[{kind}]]",
             "aa = [" + ", ".join(f'"{_rel(p, base)}"' for p in aa) + "]"]
    if cg:
        lines.append("cg = [" + ", ".join(f'"{_rel(p, base)}"' for p in cg) + "]")
    else:
        lines.append("# no cg: the CG frames are the mapping of the all-atom frames")
    lines.append(f'topology = "{_rel(topology, base)}"')
    lines.append("mapping = [" + ", ".join(f'"{_rel(p, base)}"' for p in mapping) + "]")
    return "\n".join(lines) + "\n"


def write_starter_config(config, aa: list, topology, mapping: list, cg: list | None = None,
                         validation: list | None = None, name: str | None = None, mdp=None,
                         steps: int = 2000, defines=None) -> Path:
    """Check the files and write a starting config to ``config`` (atomically; an existing file is backed up
    as #name.N#). Returns the path."""
    from ..io import read_frame
    from ..io.safe import atomic_output, check_writable
    from ..mapping import read_mapping
    from ..topology import read_topology
    config = Path(config)
    if config.suffix.lower() not in (".toml",):
        raise ConfigError("the starting config is written as TOML: give a .toml file name", path=config)
    check_writable(config)
    if not aa:
        raise ConfigError("no all-atom frames given (-f AA.xtc)")
    system = read_topology(topology, defines=defines)
    smap = read_mapping(mapping, system)
    n_beads = smap.flat().n_beads
    for p in list(aa) + list(validation or []):
        read_frame(p, n_atoms=system.n_atoms)          # the atom count must match the topology
    for p in cg or []:
        read_frame(p, n_atoms=n_beads)
    if cg and len(cg) != len(aa):
        raise ConfigError(f"{len(aa)} all-atom file(s) but {len(cg)} CG file(s); give one CG file per all-atom "
                          "file, or none (then the CG frames are mapped from the all-atom ones)")
    constraints, note = "none", "\n# (not known: set it to what your MD used; -f/--mdp reads it from your .mdp)"
    if mdp is not None:
        from ..io.mdp import read_mdp
        value = (read_mdp(mdp).get("constraints") or "none").lower().replace("_", "-")
        if value not in ("none", "h-bonds", "all-bonds"):
            raise ConfigError(f"constraints = {value} in the .mdp: gmx_dbm handles none, h-bonds and all-bonds",
                              path=mdp)
        constraints, note = value, f"  (from {Path(mdp).name})"
    base = config.resolve().parent
    name = name or config.stem
    data = _dataset("data", aa, cg, topology, mapping, base)
    if validation:
        data += ("\n" + _dataset("validation", validation, None, topology, mapping, base)
                 + 'frames = "0:2"                   # validation frames scored every validate_every steps\n')
    text = TEMPLATE.format(config=config.name, name=name, output=_rel(base / "runs" / name, base),
                           constraints=constraints, constraints_note=note, data=data, steps=steps)
    with atomic_output(config) as tmp:
        Path(tmp).write_text(text)
    log.info("wrote %s: %d moleculetype(s), %d beads per frame; train with `gmx_dbm train %s`", config,
             len(smap.molecules), n_beads, config)
    return config
