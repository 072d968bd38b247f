"""Energies of trajectories from GROMACS itself (``gmx grompp`` + ``gmx mdrun -rerun``), for ``evaluate
--rerun``."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np


def gromacs_energies(top, traj, conf, settings, defines=(), workdir=None) -> dict:
    """Mean per frame of each gmx_dbm energy term from ``gmx grompp`` + ``gmx mdrun -rerun``."""
    from ..ff.forcefield import GROMACS_TERMS
    from ..gromacs import find_gmx, rerun_energies

    gmx = find_gmx()
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="gmx_dbm_rerun_")) if own else Path(workdir)
    terms = rerun_energies(top, conf, workdir, settings=settings, traj=traj, defines=tuple(defines or ()),
                           maxwarn=2, gmx=gmx)
    out = {}
    for key, names in GROMACS_TERMS.items():
        present = [terms[n] for n in names if n in terms]
        if present:
            out[key] = float(np.mean(np.sum(present, axis=0)))
    out["frames"] = int(len(next(iter(terms.values())))) if terms else 0
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
    return out
