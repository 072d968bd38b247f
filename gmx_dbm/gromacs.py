"""Finding and running the GROMACS command-line tool ``gmx``; reading its energy files.

Lookup order: environment variable ``GMX_DBM_GMX``, the project's build prefix
(/opt/gmx_dbm/gromacs-2022.5-gmxapi, overridable with ``GMX_DBM_GROMACS_PREFIX``), then ``gmx`` on PATH.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from .errors import GromacsError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/opt/gmx_dbm/gromacs-2022.5-gmxapi"
EDR_MAGIC = -55555   # first int of an .edr file (its energy-names header)


def find_gmx(required: bool = True) -> str | None:
    """Path of the gmx binary, or None (required=False) / GromacsError when there is none."""
    exe = os.environ.get("GMX_DBM_GMX")
    if exe:
        if shutil.which(exe) is None:
            raise GromacsError(f"GMX_DBM_GMX={exe} is not an executable")
        return shutil.which(exe)
    prefixed = Path(os.environ.get("GMX_DBM_GROMACS_PREFIX", DEFAULT_PREFIX)) / "bin" / "gmx"
    if prefixed.is_file() and os.access(prefixed, os.X_OK):
        return str(prefixed)
    exe = shutil.which("gmx")
    if exe is None and required:
        raise GromacsError(f"GROMACS not found: set GMX_DBM_GMX, install into {DEFAULT_PREFIX} "
                           "(scripts/install_gromacs.sh) or put gmx on PATH")
    return exe


def gmx_topology_dir(gmx: str | None = None) -> Path | None:
    """GROMACS' force-field folder (share/gromacs/top) for the found gmx; GMXLIB first if set."""
    if os.environ.get("GMXLIB") and Path(os.environ["GMXLIB"]).is_dir():
        return Path(os.environ["GMXLIB"])
    gmx = gmx or find_gmx(required=False)
    if gmx is None:
        return None
    top = Path(os.path.realpath(gmx)).parent.parent / "share" / "gromacs" / "top"
    return top if top.is_dir() else None


_ERROR_RE = re.compile(r"^(Fatal error|Error in user input|Invalid command line argument|"
                       r"Inconsistency in user input|File input/output error)", re.M)


def distill_error(text: str) -> str:
    """The essential lines of a GROMACS failure: the block after 'Fatal error:' up to the dashes."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if _ERROR_RE.match(line):
            out = []
            for follow in lines[k + 1:]:
                if follow.startswith("----") or (follow.startswith("For more information") and out):
                    break
                if follow.strip():
                    out.append(follow.strip())
            msg = " ".join(out) or line
            warn = _first_warning(lines) if "warnings" in msg else ""
            return f"{line.rstrip(':')}: {msg}{warn}"
    tail = [ln for ln in lines if ln.strip()][-5:]
    return " | ".join(tail) if tail else "no output"


def _first_warning(lines) -> str:
    """' First warning: ...' for grompp's 'Too many warnings' failures."""
    for k, line in enumerate(lines):
        if line.startswith("WARNING"):
            body = []
            for follow in lines[k + 1:]:
                if not follow.strip():
                    break
                body.append(follow.strip())
            return f" First {line.strip()} {' '.join(body)}"
    return ""


def run_gmx(args, cwd=None, input_text: str | None = None, gmx: str | None = None,
            timeout: float | None = None) -> str:
    """Run ``gmx ARGS`` in ``cwd``; return stdout+stderr, raise GromacsError with the distilled
    GROMACS error (and the work directory) on failure."""
    exe = gmx or find_gmx()
    cmd = [exe, "-quiet", *[str(a) for a in args]] if args and args[0] != "-version" else [exe, *args]
    log.debug("running %s in %s", " ".join(cmd), cwd)
    try:
        proc = subprocess.run(cmd, cwd=cwd, input=input_text, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError as exc:
        raise GromacsError(f"cannot run {exe}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise GromacsError(f"gmx {args[0]} timed out after {timeout} s", workdir=cwd) from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise GromacsError(f"gmx {args[0]} failed (exit {proc.returncode}): {distill_error(out)}",
                           workdir=cwd)
    return out


RERUN_MDP = """; gmx_dbm rerun settings: energies only; no buffer effects (a rerun's list holds all pairs < rlist)
integrator              = md
nsteps                  = 0
cutoff-scheme           = Verlet
verlet-buffer-tolerance = -1
nstlist                 = 1
rlist                   = {rlist}
pbc                     = xyz
vdwtype                 = cut-off
vdw-modifier            = {vdw_modifier}
rvdw                    = {rvdw}
coulombtype             = {coulombtype}
rcoulomb                = {rcoulomb}
epsilon-r               = {epsilon_r}
epsilon-rf              = {epsilon_rf}
DispCorr                = no
constraints             = none
nstcalcenergy           = 1
nstenergy               = 1
"""


def rerun_mdp(settings) -> str:
    """An mdp text for ``gmx mdrun -rerun`` matching a ``NonbondedSettings``-like object."""
    coul = {"reaction-field": "reaction-field", "cut-off": "cut-off", "none": "reaction-field"}[settings.coulomb]
    return RERUN_MDP.format(rlist=max(settings.cutoff, settings.rcoulomb), rvdw=settings.cutoff,
                            vdw_modifier="potential-shift" if settings.modifier == "potential-shift" else "none",
                            coulombtype=coul, rcoulomb=settings.rcoulomb, epsilon_r=settings.epsilon_r,
                            epsilon_rf=settings.epsilon_rf)


def edr_energies(edr, workdir=None, times: bool = False) -> dict:
    """All energy terms of a GROMACS energy file (.edr), read directly (``pyedr``): {GROMACS term name:
    float64 array over the file's frames}, in file order; the frame times are not a term unless
    ``times`` (then under "Time", ps). ``workdir``: the folder a relative ``edr`` is in."""
    import numpy as np
    path = Path(edr) if workdir is None else Path(workdir) / edr
    if not path.is_file():
        raise GromacsError(f"energy file {path} not found", workdir=workdir)
    # GROMACS 4+ energy files start with the XDR int -55555; pyedr reads any other start as a pre-4.0 file
    # whose first int is the number of terms, and a stray file then makes it allocate without bound
    with open(path, "rb") as fh:
        head = fh.read(4)
    if len(head) < 4 or struct.unpack(">i", head)[0] != EDR_MAGIC:
        raise GromacsError(f"cannot read energy file {path}: not a GROMACS (4.0 or later) .edr file",
                           workdir=workdir)
    try:
        import pyedr
    except ImportError:
        raise GromacsError("the pyedr package is needed to read GROMACS energy files: pip install pyedr") from None
    try:
        terms = pyedr.edr_to_dict(str(path))
    except Exception as exc:  # pyedr signals a truncated or foreign file with several exception types
        raise GromacsError(f"cannot read energy file {path}: {exc}", workdir=workdir) from None
    return {name: np.asarray(values, dtype=np.float64) for name, values in terms.items()
            if times or name != "Time"}


def rerun_energies(top, conf, workdir, settings=None, mdp_text: str | None = None, traj=None,
                   defines=(), maxwarn: int = 0, gmx: str | None = None) -> dict:
    """Energies of ``conf`` (or of every frame of ``traj``) from ``gmx grompp`` + ``gmx mdrun -rerun`` in
    ``workdir``: {GROMACS term name: array over frames}."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if mdp_text is None:
        mdp_text = rerun_mdp(settings)
    if defines:
        mdp_text += "define = " + " ".join(f"-D{d}" for d in defines) + "\n"
    (workdir / "rerun.mdp").write_text(mdp_text)
    run_gmx(["grompp", "-f", "rerun.mdp", "-c", Path(conf).resolve(), "-p", Path(top).resolve(),
             "-o", "rerun.tpr", "-po", "mdout.mdp", "-maxwarn", str(maxwarn)], cwd=workdir, gmx=gmx)
    run_gmx(["mdrun", "-s", "rerun.tpr", "-rerun", Path(traj or conf).resolve(), "-deffnm", "rerun",
             "-nt", "1", "-pin", "off"], cwd=workdir, gmx=gmx)
    return edr_energies(workdir / "rerun.edr")
