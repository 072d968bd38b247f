"""Running one stage (EM or MD): ``gmx grompp`` + ``gmx mdrun`` as subprocesses (``run_stage_gmx``), or
``gmxapi.commandline_operation`` (grompp) -> ``read_tpr`` -> ``modify_input`` (nsteps) -> ``mdrun``
(``run_stage_gmxapi``); the distilled error when a stage fails; the stage's results (``read_stage``).

The gmxapi chain runs in a child Python process (``python -c ... _gmxapi_stage_main``): a GROMACS fatal
error inside ``gmxapi.mdrun`` ends the process it runs in without a Python exception, and in-process mdrun
pins the process to cores (also ``-pin off``). The calling process's affinity is never touched. The
child's stdout/stderr go to ``mdrun.out`` in the stage folder. Child processes get the environment without
the MPI launcher's variables (``child_env``), so that a relaxation run as MPI ranks can start them.

Energies come from the stage's .edr (``gmx_dbm.gromacs.edr_energies``); the log gives only what the .edr
does not hold: EM's convergence message (steps, Fmax) and constraint warnings.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import GromacsError
from .options import RelaxOptions, import_gmxapi

log = logging.getLogger(__name__)


class StageFiles(NamedTuple):
    """What a stage's mdrun wrote: final structure, log, energy file."""
    conf: Path
    log: Path
    edr: Path


@dataclass
class StageResult:
    stage: str
    directory: str
    log: str
    conf: str
    nsteps: int
    seconds: float
    steps: int | None = None           # EM: steps taken
    converged: bool | None = None      # EM: Fmax < emtol reached
    epot: float | None = None          # EM: final potential energy; MD: its average
    fmax: float | None = None          # EM: final maximum force
    energies: dict = field(default_factory=dict)   # {term: kJ/mol ...}: MD averages, EM final values
    constraint_warnings: int = 0
    edr: str | None = None


# ----------------------------------------------------------------------------------------------------
# results

_EM_RE = re.compile(r"(Steepest Descents|Polak-Ribiere Conjugate Gradients|Low-Memory BFGS Minimizer)\s+"
                    r"(converged to Fmax < (\S+) in (\d+) steps|converged to machine precision in (\d+) steps"
                    r"|did not converge to Fmax < (\S+) in (\d+) steps)")


def read_stage(stage: str, log_path: Path, edr_path: Path) -> dict:
    """StageResult fields from a finished stage: energies and potential from the .edr (EM: its last frame,
    the lowest energy reached; MD: the average over its frames), EM steps/convergence/Fmax and constraint
    warnings from the log."""
    from ..gromacs import edr_energies
    log_path, edr_path = Path(log_path), Path(edr_path)
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    out = {"constraint_warnings": len(re.findall(r"(LINCS|SETTLE|SHAKE) WARNING|[Cc]onstraint error", text))}
    terms = edr_energies(edr_path) if edr_path.is_file() else {}
    if terms and len(next(iter(terms.values()))):
        pick = (lambda v: float(v[-1])) if stage == "em" else (lambda v: float(np.mean(v)))
        out["energies"] = {name: pick(values) for name, values in terms.items()}
        out["epot"] = out["energies"].get("Potential")
        out["edr"] = str(edr_path)
    else:
        log.debug("%s: no energy frames in %s", stage, edr_path)
    if stage == "em":
        m = _EM_RE.search(text)
        if m:
            out["converged"] = m.group(3) is not None
            out["steps"] = int(m.group(4) or m.group(5) or m.group(7))
        f = re.search(r"Maximum force\s+=\s+(\S+)", text)
        if f:
            out["fmax"] = float(f.group(1))
    return out


# ----------------------------------------------------------------------------------------------------
# failures

def distill(text: str) -> str:
    """gmx_dbm.gromacs.distill_error, plus the first 'ERROR n [file ...]' block when the fatal error only
    says 'There were N errors in input file(s)' (grompp's box / cut-off and similar checks)."""
    from ..gromacs import distill_error
    msg = distill_error(text)
    if re.search(r"There (was|were) \d+ errors? in input file", msg):
        lines = text.splitlines()
        for k, line in enumerate(lines):
            if re.match(r"^ERROR \d+ \[file", line):
                body = []
                for follow in lines[k + 1:]:
                    if not follow.strip():
                        if body:
                            break
                        continue
                    body.append(follow.strip())
                msg += f" First {line.strip()} {' '.join(body)}"
                break
    return msg


def mdrun_failure(stage_dir: Path, extra: str = "") -> str:
    """The reason an mdrun in ``stage_dir`` failed, from its output and logs."""
    texts = [extra]
    for name in ("mdrun.out", "md.log", f"{stage_dir.name}.log"):
        for p in stage_dir.rglob(name):
            texts.append(p.read_text(errors="replace"))
    for t in texts:
        if t and re.search(r"^(Fatal error|Error in user input|Inconsistency in user input)", t, re.M):
            return distill(t)
    for t in texts:
        m = re.search(r"^.*(what\(\):|Segmentation fault|Maximum force\s+=\s+(inf|nan)).*$", t or "", re.M)
        if m:
            return m.group(0).strip()
    return distill("\n".join(t for t in texts if t))


# ----------------------------------------------------------------------------------------------------
# engines

# what an MPI launcher puts in its ranks' environment (Open MPI, PMIx, MPICH/Hydra, Intel MPI)
_LAUNCHER_PREFIXES = ("OMPI_", "PMIX_", "PMI_", "HYDI_", "HYDRA_", "I_MPI_HYDRA_", "MPI_LOCALNRANKS",
                      "MPI_LOCALRANKID")
_LAUNCHER_KEEP = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")


def child_env(env=None) -> dict:
    """``env`` (default: this process's) without the MPI launcher's variables. A child process that
    initialises MPI (gmxapi.mdrun imports mpi4py) with its parent rank's variables tries to join the
    parent's job as that rank: measured with Open MPI 4.1 under mpirun, MPI_Init fails ("Not found") or
    hangs. Without them it starts as a one-process MPI run of its own."""
    env = dict(os.environ if env is None else env)
    for name in list(env):
        if name.startswith(_LAUNCHER_PREFIXES) and name not in _LAUNCHER_KEEP:
            del env[name]
    return env


def _grompp_args(mdp, conf, ref, top, tpr, maxwarn):
    args = ["grompp", "-f", mdp, "-c", conf, "-p", top, "-o", tpr, "-po", Path(tpr).with_suffix(".mdout.mdp"),
            "-maxwarn", str(maxwarn)]
    if ref is not None:
        args[5:5] = ["-r", ref]
    return [str(a) for a in args]


def run_stage_gmx(stage, stage_dir: Path, mdp: Path, conf: Path, ref, top: Path, nsteps: int,
                  options: RelaxOptions, gmx: str) -> StageFiles:
    """grompp + mdrun through the gmx command line."""
    from ..gromacs import run_gmx
    tpr = stage_dir / f"{stage}.tpr"
    try:
        proc = subprocess.run([gmx, "-quiet", *_grompp_args(mdp, conf, ref, top, tpr, options.maxwarn)],
                              cwd=stage_dir, capture_output=True, text=True, env=child_env())
    except OSError as exc:
        raise GromacsError(f"cannot run {gmx}: {exc}", workdir=stage_dir) from None
    text = proc.stdout + proc.stderr
    (stage_dir / "grompp.out").write_text(text)
    if proc.returncode != 0:
        raise GromacsError(f"gmx grompp failed (exit {proc.returncode}): {distill(text)}", workdir=stage_dir)
    args = ["mdrun", "-s", tpr, "-deffnm", stage, "-pin", "off"]
    if options.threads:
        args += ["-nt", str(options.threads)]
    out = run_gmx(args, cwd=stage_dir, gmx=gmx)
    (stage_dir / "mdrun.out").write_text(out)
    return StageFiles(stage_dir / f"{stage}.gro", stage_dir / f"{stage}.log", stage_dir / f"{stage}.edr")


def run_stage_gmxapi(stage, stage_dir: Path, mdp: Path, conf: Path, ref, top: Path, nsteps: int,
                     options: RelaxOptions, gmx: str) -> StageFiles:
    """commandline_operation(grompp) -> read_tpr -> modify_input(nsteps) -> mdrun, in a child Python
    process working in ``stage_dir`` (see the module doc for why)."""
    spec = {"stage": stage, "mdp": str(mdp), "conf": str(conf), "ref": None if ref is None else str(ref),
            "top": str(top), "tpr": str(stage_dir / f"{stage}.tpr"), "nsteps": int(nsteps),
            "maxwarn": int(options.maxwarn), "threads": int(options.threads), "gmx": gmx}
    spec_path = stage_dir / "gmxapi_stage.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    env = child_env()
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = ("import sys; from gmx_dbm.relax.engines import _gmxapi_stage_main; "
            "sys.exit(_gmxapi_stage_main(sys.argv[1]))")
    with open(stage_dir / "mdrun.out", "w") as fh:
        proc = subprocess.run([sys.executable, "-c", code, str(spec_path)], cwd=stage_dir, env=env,
                              stdout=fh, stderr=subprocess.STDOUT)
    result_path = stage_dir / "gmxapi_result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if result.get("error"):
        raise GromacsError(result["error"], workdir=stage_dir)
    if proc.returncode != 0 or "directory" not in result:
        how = f"exit {proc.returncode}"
        if proc.returncode < 0:
            import signal
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-proc.returncode).name}"
        raise GromacsError(f"gmxapi.mdrun ({stage}) failed ({how}): {mdrun_failure(stage_dir)}",
                           workdir=stage_dir)
    directory = Path(result["directory"])
    return StageFiles(directory / "confout.gro", directory / "md.log", directory / "ener.edr")


def _gmxapi_stage_main(spec_path) -> int:
    """Child-process body of ``run_stage_gmxapi``; writes gmxapi_result.json next to the spec."""
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec_path).with_name("gmxapi_result.json")
    gmxapi = import_gmxapi()
    if gmxapi is None:
        out.write_text(json.dumps({"error": "gmxapi is not importable in the child process"}))
        return 3
    input_files = {"-f": spec["mdp"], "-c": spec["conf"], "-p": spec["top"]}
    if spec["ref"] is not None:
        input_files["-r"] = spec["ref"]
    tpr = spec["tpr"]
    grompp = gmxapi.commandline_operation(
        spec["gmx"], ["-quiet", "grompp", "-maxwarn", str(spec["maxwarn"])], input_files=input_files,
        output_files={"-o": tpr, "-po": str(Path(tpr).with_suffix(".mdout.mdp"))})
    rc = grompp.output.returncode.result()
    text = (grompp.output.stdout.result() or "") + (grompp.output.stderr.result() or "")
    Path(spec_path).with_name("grompp.out").write_text(text)
    if rc != 0:
        out.write_text(json.dumps({"error": f"gmx grompp failed (exit {rc}): {distill(text)}"}))
        return 3
    simulation_input = gmxapi.modify_input(gmxapi.read_tpr(tpr), parameters={"nsteps": spec["nsteps"]})
    runtime = {"-pin": "off"}
    if spec["threads"]:
        runtime["-nt"] = str(spec["threads"])
    md = gmxapi.mdrun(simulation_input, runtime_args=runtime)
    md.run()
    out.write_text(json.dumps({"directory": md.output.directory.result()}))
    return 0
