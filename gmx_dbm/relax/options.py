"""Run settings of a relaxation (``RelaxOptions``), the choice of engine, and the one gmxapi import of
gmx_dbm (``import_gmxapi``: every other module asks it)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

RESTRAIN_CHOICES = ("heavy", "all", "none")
CONSTRAINT_CHOICES = ("none", "h-bonds", "all-bonds")
ENGINES = ("gmxapi", "gmx")


@dataclass
class RelaxOptions:
    """Run settings. Defaults: EM up to 5000 steepest-descent steps to Fmax < 500 kJ/mol/nm, then 10 ps
    NVT MD (dt 1 fs, v-rescale, h-bonds constrained by LINCS) with heavy atoms restrained at 1000
    kJ/mol/nm2 to the input positions. ``mdp``: a user .mdp whose entries override the generated ones.
    ``min_distance``: atom pairs closer than this (nm) are pushed apart before EM (0: off); the restraint
    reference stays the input."""
    steps_em: int = 5000
    emtol: float = 500.0
    md_ps: float = 10.0
    dt: float = 0.001
    temperature: float = 300.0
    restrain: str = "heavy"
    fc: float = 1000.0
    constraints: str = "h-bonds"
    mdp: str | None = None
    engine: str = "gmxapi"
    threads: int = 0
    seed: int = 1
    maxwarn: int = 0
    min_distance: float = 0.05

    def check(self):
        if self.restrain not in RESTRAIN_CHOICES:
            raise InputError(f"restrain must be one of {', '.join(RESTRAIN_CHOICES)}, got {self.restrain!r}")
        if self.constraints not in CONSTRAINT_CHOICES:
            raise InputError(f"constraints must be one of {', '.join(CONSTRAINT_CHOICES)}, got {self.constraints!r}")
        if self.engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.steps_em < 0 or self.md_ps < 0 or self.dt <= 0 or self.temperature <= 0 or self.fc < 0:
            raise InputError("steps-em, md-ps and fc must be >= 0; dt and temperature > 0")
        if self.mdp is not None and not Path(self.mdp).is_file():
            raise InputError("mdp file not found", path=self.mdp)


_GMXAPI = None


def import_gmxapi():
    """The gmxapi module with its compiled extension, or None (with the reason logged at debug level)."""
    global _GMXAPI
    if _GMXAPI is None:
        try:
            if os.environ.get("GMX_DBM_NO_GMXAPI"):
                raise ImportError("GMX_DBM_NO_GMXAPI is set")
            # gmxapi logs every operation it builds at INFO: keep that for --debug
            quiet = logging.getLogger("gmx_dbm").getEffectiveLevel() > logging.DEBUG
            for name in ("gmxapi", "gmx"):
                if quiet and logging.getLogger(name).level == logging.NOTSET:
                    logging.getLogger(name).setLevel(logging.WARNING)
            import gmxapi
            import gmxapi._gmxapi  # noqa: F401  (read_tpr/modify_input/mdrun need the extension)
            _GMXAPI = gmxapi
        except Exception as exc:  # ImportError, or a broken build raising something else
            log.debug("gmxapi not importable: %s", exc)
            _GMXAPI = False
    return _GMXAPI or None


def choose_engine(engine: str) -> str:
    """'gmx' when asked for or when gmxapi cannot be imported (with a warning), else 'gmxapi'."""
    if engine == "gmx":
        return "gmx"
    if import_gmxapi() is None:
        log.warning("gmxapi is not importable here: running grompp/mdrun through the gmx command line instead")
        return "gmx"
    return "gmxapi"
