"""``gmx_dbm energy``: energies per term of every frame of a structure, from the torch force field
(equal to ``gmx mdrun -rerun`` with the same run parameters)."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from .errors import InputError, TrajectoryError
from .ff.forcefield import ENERGY_KEYS, ForceField, NonbondedSettings, settings_from_mdp
from .io import read_frames
from .io.mdp import read_mdp
from .topology import check_structure, read_topology


def read_mdp_settings(path) -> NonbondedSettings:
    """Non-bonded settings from a GROMACS .mdp file (``settings_from_mdp``)."""
    return settings_from_mdp(read_mdp(path))


def compute_energies(conf, top, mdp=None, defines=None, include_dirs=None, dtype=torch.float64,
                     settings: NonbondedSettings | None = None, device: str = "cpu") -> dict:
    """Energies of every frame of ``conf`` (.gro/.xtc/.pdb) with topology ``top``: returns
    {"terms": [...], "frames": [{term: kJ/mol}], "mean": {term: kJ/mol}, "n_atoms": n, "settings": {...}}."""
    system = read_topology(top, defines=defines, include_dirs=include_dirs)
    if settings is None:
        settings = read_mdp_settings(mdp) if mdp else NonbondedSettings()
    from .devices import resolve_device
    ff = ForceField(system.flat(), settings, dtype=dtype, device=resolve_device(device, where="--device"))
    frames = []
    for k, frame in enumerate(read_frames(conf)):
        if k == 0:
            check_structure(system, frame.n_atoms, conf)
        try:
            ff.check_box(frame.box)
        except InputError as exc:
            raise TrajectoryError(exc.message, path=conf, where=f"frame {k}") from None
        frames.append(ff.energies(frame.positions, frame.box))
    terms = [k for k in ENERGY_KEYS if frames and k in frames[0]]
    mean = {k: float(np.mean([f[k] for f in frames])) for k in terms}
    return {"terms": terms, "frames": frames, "mean": mean, "n_atoms": system.n_atoms,
            "settings": asdict(settings)}
