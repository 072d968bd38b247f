"""Relaxation of all-atom structures in GROMACS: steepest-descent EM, then position-restrained MD.

The only module of gmx_dbm that imports gmxapi. Two engines run the same steps:

* ``gmxapi`` (default): ``gmxapi.commandline_operation`` runs ``gmx grompp``; the run input goes through
  ``gmxapi.read_tpr`` -> ``gmxapi.modify_input`` (nsteps) -> ``gmxapi.mdrun``.
* ``gmx``: ``gmx grompp`` + ``gmx mdrun`` as subprocesses. Used when gmxapi cannot be imported (a logged
  notice says so) or when asked for.

Each run gets a fresh work directory (kept: inputs, generated topology wrapper, mdp files, mdrun logs).
The user's topology is never modified: a wrapper ``topol.top`` in the work directory re-includes its pieces
and adds, after each molecule type, ``#ifdef GMX_DBM_POSRES`` + an include of generated
``posre_gmx_dbm_<molecule>.itp`` (restraints on heavy atoms, all atoms or none). The restraint reference
(``grompp -r``) is the input structure, for EM and MD alike. Includes of restraint files that do not exist
(``#include "posres.itp"`` in the shared sPS topology) get an empty placeholder in the work directory's
include folder and a warning; any other missing include is a TopologyError naming file and line.

The gmxapi chain of each stage runs in a child Python process (``python -c ... _gmxapi_stage_main``): a
GROMACS fatal error inside ``gmxapi.mdrun`` ends the process it runs in without a Python exception, and
in-process mdrun pins the process to cores (also ``-pin off``). The calling process's affinity is never
touched. Its stdout/stderr go to ``mdrun.out`` in the stage folder.

``backmap_step(...)`` is a gmxapi operation (``gmxapi.function_wrapper``) for workflow scripts: it
backmaps CG frame(s) and publishes file paths (structure, wrapper topology, EM and MD mdp files) that feed
``gmxapi.commandline_operation`` (grompp) and ``gmxapi.mdrun`` directly; see examples/gmxapi_workflow.py.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GmxDbmError, GromacsError, InputError, TopologyError
from .geometry import minimum_image

log = logging.getLogger(__name__)

POSRES_DEFINE = "GMX_DBM_POSRES"
RESTRAIN_CHOICES = ("heavy", "all", "none")
CONSTRAINT_CHOICES = ("none", "h-bonds", "all-bonds")
ENGINES = ("gmxapi", "gmx")
EM_INTEGRATORS = ("steep", "cg", "l-bfgs")
MD_INTEGRATORS = ("md", "md-vv", "md-vv-avek", "sd", "bd")
HEAVY_MASS = 4.5  # amu: above hydrogen even with hydrogen-mass repartitioning; massless sites are not heavy


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


# ----------------------------------------------------------------------------------------------------
# gmxapi import (the only place)

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
    if engine == "gmx":
        return "gmx"
    if import_gmxapi() is None:
        log.warning("gmxapi is not importable here: running grompp/mdrun through the gmx command line instead")
        return "gmx"
    return "gmxapi"


# ----------------------------------------------------------------------------------------------------
# topology wrapper and restraints

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+["<]([^">]+)[">]')
_HEADER_RE = re.compile(r"^\s*\[\s*([A-Za-z_ ]+?)\s*\]")
_COND_OPEN = re.compile(r"^\s*#\s*if(n?def)?\b")
_COND_CLOSE = re.compile(r"^\s*#\s*endif\b")


def _strip(line: str) -> str:
    return line.split(";", 1)[0].strip()


def _resolve(name: str, here: Path, include_dirs) -> Path | None:
    for d in [here, *include_dirs]:
        p = Path(d) / name
        if p.is_file():
            return p.resolve()
    return None


@dataclass
class _Scan:
    moleculetypes: list = field(default_factory=list)   # names, in definition order
    missing: list = field(default_factory=list)         # (file, line, name)


def _scan(path: Path, include_dirs, seen=None) -> _Scan:
    """Moleculetypes a file defines (with its includes) and includes that cannot be found."""
    seen = set() if seen is None else seen
    out = _Scan()
    if path in seen:
        return out
    seen = seen | {path}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise TopologyError(f"cannot read: {exc.strerror}", path=path) from None
    want_name = False
    for k, line in enumerate(lines, 1):
        m = _INCLUDE_RE.match(line)
        if m:
            target = _resolve(m.group(1), path.parent, include_dirs)
            if target is None:
                out.missing.append((path, k, m.group(1)))
            else:
                sub = _scan(target, include_dirs, seen)
                out.moleculetypes += sub.moleculetypes
                out.missing += sub.missing
            continue
        h = _HEADER_RE.match(line)
        if h:
            want_name = h.group(1).strip().lower() == "moleculetype"
            continue
        if want_name and _strip(line) and not line.lstrip().startswith("#"):
            out.moleculetypes.append(_strip(line).split()[0])
            want_name = False
    return out


def _posres_block(name: str, with_posres: set) -> list:
    if name not in with_posres:
        return []
    return [f"; gmx_dbm: position restraints for {name}", f"#ifdef {POSRES_DEFINE}",
            f'#include "{posres_filename(name)}"', "#endif"]


def posres_filename(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
    return f"posre_gmx_dbm_{safe}.itp"


def _rewrite(path: Path, include_dirs, with_posres: set, copies_dir: Path, header: str) -> str:
    """Text of a copy of ``path`` with absolute includes and restraint includes after each moleculetype.
    Included files defining one moleculetype are included as they are; files defining several are
    rewritten the same way into ``copies_dir``."""
    out = [header]
    current = None
    want_name = False
    for line in path.read_text(errors="replace").splitlines():
        m = _INCLUDE_RE.match(line)
        if m:
            target = _resolve(m.group(1), path.parent, include_dirs)
            if target is None:  # a restraint placeholder in the include folder, found by grompp's -I
                out.append(line)
                continue
            mts = _scan(target, include_dirs).moleculetypes
            if not mts:
                out.append(f'#include "{target}"')
            elif len(mts) == 1:
                if current:
                    out += _posres_block(current, with_posres)
                out.append(f'#include "{target}"')
                current = mts[0]
            else:
                if current:
                    out += _posres_block(current, with_posres)
                    current = None
                copies_dir.mkdir(parents=True, exist_ok=True)
                copy = copies_dir / f"{len(list(copies_dir.iterdir())):02d}_{target.name}"
                copy.write_text(_rewrite(target, include_dirs, with_posres, copies_dir,
                                         f"; gmx_dbm relax: copy of {target} with restraint includes") + "\n")
                out.append(f'#include "{copy.resolve()}"')
            continue
        h = _HEADER_RE.match(line)
        if h:
            sec = h.group(1).strip().lower()
            if sec in ("moleculetype", "system") and current:
                out += _posres_block(current, with_posres)
                current = None
            want_name = sec == "moleculetype"
            out.append(line)
            continue
        if want_name and _strip(line) and not line.lstrip().startswith("#"):
            current = _strip(line).split()[0]
            want_name = False
        out.append(line)
    if current:
        out += _posres_block(current, with_posres)
    return "\n".join(out)


@dataclass
class PreparedTopology:
    """A work directory's topology: wrapper .top, include folders for grompp, the parsed system."""
    top: Path
    include_dirs: list
    system: object
    flat: object
    restrained: np.ndarray      # global indices of restrained atoms
    heavy: np.ndarray           # global indices of heavy atoms
    defines: list


def _heavy_mask(masses) -> np.ndarray:
    return np.asarray(masses, dtype=float) > HEAVY_MASS


def prepare_topology(topology, workdir, restrain: str = "heavy", fc: float = 1000.0, defines=None,
                     include_dirs=None) -> PreparedTopology:
    """Write ``workdir/topol.top`` (wrapper), ``posre_gmx_dbm_*.itp`` and restraint placeholders."""
    from .gromacs import gmx_topology_dir
    from .io.topology import read_topology
    top = Path(topology).resolve()
    if not top.is_file():
        raise TopologyError("topology file not found", path=topology)
    workdir = Path(workdir).resolve()
    inc = workdir / "include"
    inc.mkdir(parents=True, exist_ok=True)
    search = [Path(d).resolve() for d in (include_dirs or [])]
    gmxlib = gmx_topology_dir()
    scan_dirs = search + ([gmxlib] if gmxlib else [])
    scan = _scan(top, scan_dirs)
    for path, line, name in scan.missing:
        if "posre" in Path(name).name.lower():
            target = inc / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"; gmx_dbm relax: placeholder for '{name}', included by {path}:{line} but "
                              "not found; restraints come from posre_gmx_dbm_*.itp instead\n")
            log.warning("%s:%d includes %s, which does not exist: an empty placeholder is used (work "
                        "directory include/ folder)", path, line, name)
        else:
            raise TopologyError(f"#include file '{name}' not found (searched: {path.parent}"
                                f"{''.join(', ' + str(d) for d in scan_dirs)})", path=path, line=line)
    all_dirs = [inc, *search]
    system = read_topology(top, defines=defines, include_dirs=[str(d) for d in all_dirs])
    flat = system.flat()
    heavy_global = _heavy_mask(flat.masses)
    with_posres = set()
    if restrain != "none":
        for name, count in system.molecules:
            mt = system.moleculetypes[name]
            masses = np.asarray(mt.atom_attr("mass"), dtype=float)
            sel = np.arange(len(masses)) if restrain == "all" else np.nonzero(_heavy_mask(masses))[0]
            sel = [i for i in sel if masses[i] > 0]
            if not sel:
                continue
            rows = "\n".join(f"{i + 1:6d}     1 {fc:10g} {fc:10g} {fc:10g}" for i in sel)
            (workdir / posres_filename(name)).write_text(
                f"; gmx_dbm relax: {restrain} atoms of {name} restrained to the -r reference\n"
                f"[ position_restraints ]\n;   ai  funct        fcx        fcy        fcz\n{rows}\n")
            with_posres.add(name)
    text = _rewrite(top, scan_dirs, with_posres, workdir / "topology",
                    f"; gmx_dbm relax: wrapper of {top} (that file is not modified)")
    (workdir / "topol.top").write_text(text + "\n")
    if restrain == "none":
        restrained = np.zeros(0, dtype=np.int64)
    else:
        restrained = np.nonzero(heavy_global if restrain == "heavy" else flat.masses > 0)[0]
    return PreparedTopology(workdir / "topol.top", all_dirs, system, flat, restrained,
                            np.nonzero(heavy_global)[0], list(defines or []))


# ----------------------------------------------------------------------------------------------------
# run parameters

def read_mdp(path) -> dict:
    """Entries of an .mdp file: {normalised key (lower case, '-' for '_'): value string}."""
    out = {}
    for k, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        body = _strip(line)
        if not body:
            continue
        if "=" not in body:
            raise InputError(f"not a 'key = value' line: {line.strip()!r}", path=path, line=k)
        key, value = body.split("=", 1)
        out[key.strip().lower().replace("_", "-")] = value.strip()
    return out


def electrostatics(system) -> dict:
    """PME when a molecule carries a net charge, else reaction field (epsilon-rf 0 = conducting)."""
    net, any_q = 0.0, False
    for name, count in system.molecules:
        if not count:
            continue
        q = np.asarray(system.moleculetypes[name].atom_attr("charge"), dtype=float)
        any_q |= bool(np.any(np.abs(q) > 1e-6))
        net = max(net, abs(float(q.sum())))
    if net > 1e-3:
        return {"coulombtype": "PME", "rcoulomb": "1.0", "fourierspacing": "0.12"}
    return {"coulombtype": "reaction-field", "rcoulomb": "1.0", "epsilon-rf": "0"}


def make_mdp(stage: str, options: RelaxOptions, prepared: PreparedTopology, user: dict | None = None) -> tuple:
    """(mdp text, nsteps) for stage 'em' or 'md'."""
    p = {
        "cutoff-scheme": "Verlet", "nstlist": "10", "pbc": "xyz",
        "vdwtype": "cut-off", "vdw-modifier": "potential-shift", "rvdw": "1.0", "DispCorr": "no",
        **electrostatics(prepared.system),
        "constraints": options.constraints, "constraint-algorithm": "lincs",
        "nstxout": "0", "nstvout": "0", "nstfout": "0", "nstxout-compressed": "0",
    }
    if stage == "em":
        # EM without constraints: LINCS on a distorted start stalls steepest descent at "machine
        # precision" after a few dozen steps (measured on a poorly backmapped sPS frame)
        p.update({"integrator": "steep", "emtol": f"{options.emtol:g}", "emstep": "0.01",
                  "nstenergy": "0", "nstlog": "0", "constraints": "none"})
    else:
        p.update({"integrator": "md", "dt": f"{options.dt:g}", "tcoupl": "v-rescale", "tc-grps": "System",
                  "tau-t": "0.1", "ref-t": f"{options.temperature:g}", "pcoupl": "no",
                  "gen-vel": "yes", "gen-temp": f"{options.temperature:g}", "gen-seed": str(options.seed),
                  "continuation": "no", "comm-mode": "linear", "nstcalcenergy": "100",
                  "nstenergy": "100", "nstlog": "1000", "lincs-warnangle": "30"})
    user = dict(user or {})
    uint = user.pop("integrator", None)
    if uint is not None:
        if stage == "em" and uint.lower() in EM_INTEGRATORS:
            p["integrator"] = uint
        elif stage == "md" and uint.lower() in MD_INTEGRATORS:
            p["integrator"] = uint
    user.pop("nsteps", None)
    udefine = user.pop("define", "")
    uinclude = user.pop("include", "")
    norm = {k.lower().replace("_", "-"): k for k in p}
    for k, v in user.items():
        p.pop(norm.get(k, k), None)
        p[k] = v
    if stage == "md" and str(p.get("pcoupl", "no")).lower() not in ("no", "") and "refcoord-scaling" not in p:
        p["refcoord-scaling"] = "com"
    dt = float(p.get("dt", options.dt))
    nsteps = options.steps_em if stage == "em" else int(round(options.md_ps / dt))
    p["nsteps"] = str(nsteps)
    defines = [f"-D{d}" for d in prepared.defines] + ([udefine] if udefine else [])
    if len(prepared.restrained):
        defines.append(f"-D{POSRES_DEFINE}")
    if defines:
        p["define"] = " ".join(defines)
    p["include"] = " ".join([f"-I{d}" for d in prepared.include_dirs] + ([uinclude] if uinclude else []))
    width = max(len(k) for k in p)
    text = f"; gmx_dbm relax: {stage} stage (generated; entries of a user .mdp override)\n"
    text += "".join(f"{k:<{width}} = {v}\n" for k, v in p.items())
    return text, nsteps


# ----------------------------------------------------------------------------------------------------
# GROMACS log parsing

_EM_RE = re.compile(r"(Steepest Descents|Polak-Ribiere Conjugate Gradients|Low-Memory BFGS Minimizer)\s+"
                    r"(converged to Fmax < (\S+) in (\d+) steps|converged to machine precision in (\d+) steps"
                    r"|did not converge to Fmax < (\S+) in (\d+) steps)")


def parse_energy_blocks(text: str) -> list:
    """Energy blocks of an md.log: [{term: value}], in order (the averages block last if present)."""
    lines = text.splitlines()
    blocks = []
    k = 0
    while k < len(lines):
        if lines[k].strip() == "Energies (kJ/mol)":
            block = {}
            k += 1
            while k + 1 < len(lines) and lines[k].strip() and lines[k + 1].strip():
                names, vals = lines[k], lines[k + 1]
                ncol = (len(names.rstrip()) + 14) // 15
                for c in range(ncol):
                    nm = names[c * 15:(c + 1) * 15].strip()
                    try:
                        block[nm] = float(vals[c * 15:(c + 1) * 15])
                    except ValueError:
                        pass
                k += 2
            blocks.append(block)
        k += 1
    return blocks


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
    epot: float | None = None          # final potential energy
    fmax: float | None = None          # EM: final maximum force
    energies: dict = field(default_factory=dict)   # MD: averages; EM: final
    constraint_warnings: int = 0


def parse_log(stage: str, log_path: Path) -> dict:
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    out = {"constraint_warnings": len(re.findall(r"(LINCS|SETTLE|SHAKE) WARNING|[Cc]onstraint error", text))}
    blocks = parse_energy_blocks(text)
    if stage == "em":
        m = _EM_RE.search(text)
        if m:
            out["converged"] = m.group(3) is not None
            out["steps"] = int(m.group(4) or m.group(5) or m.group(7))
        e = re.search(r"Potential Energy\s+=\s+(\S+)", text)
        f = re.search(r"Maximum force\s+=\s+(\S+)", text)
        if e:
            out["epot"] = float(e.group(1))
        if f:
            out["fmax"] = float(f.group(1))
        if blocks:
            out["energies"] = blocks[-1]
    else:
        if blocks:
            out["energies"] = blocks[-1]
            out["epot"] = blocks[-1].get("Potential")
    return out


# ----------------------------------------------------------------------------------------------------
# overlapping atoms

def separate_overlaps(positions, box, min_distance: float = 0.05, max_iter: int = 200, seed: int = 0) -> tuple:
    """Push apart atom pairs closer than ``min_distance`` nm (any pair: no real pair is that close).
    Returns (positions, number of pairs found in the first pass).

    Why: GROMACS runs in single precision; two atoms within ~0.01 nm give LJ forces whose square
    overflows, steepest descent reports Fmax = inf and stops "at machine precision" after ~15 steps
    (measured on random starts and on poorly backmapped frames). Moving them to ``min_distance`` leaves the
    rest to EM."""
    from .metrics import periodic_pairs
    pos = np.array(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    rng = np.random.default_rng(seed)
    first = None
    for _ in range(max_iter):
        i, j, d = periodic_pairs(pos, box, min_distance)
        if first is None:
            first = len(i)
        if len(i) == 0:
            break
        v = minimum_image(pos[j] - pos[i], box)
        tiny = d < 1e-6
        if tiny.any():
            r = rng.normal(size=(int(tiny.sum()), 3))
            v[tiny] = r / np.linalg.norm(r, axis=1, keepdims=True) * 1e-6
            d = np.where(tiny, 1e-6, d)
        shift = (v / d[:, None]) * (0.5 * 1.02 * (min_distance - d))[:, None]
        np.add.at(pos, i, -shift)
        np.add.at(pos, j, shift)
    return pos, int(first or 0)


# ----------------------------------------------------------------------------------------------------
# engines

def _grompp_args(mdp, conf, ref, top, tpr, maxwarn):
    args = ["grompp", "-f", mdp, "-c", conf, "-p", top, "-o", tpr, "-po", Path(tpr).with_suffix(".mdout.mdp"),
            "-maxwarn", str(maxwarn)]
    if ref is not None:
        args[5:5] = ["-r", ref]
    return [str(a) for a in args]


def distill(text: str) -> str:
    """gmx_dbm.gromacs.distill_error, plus the first 'ERROR n [file ...]' block when the fatal error only
    says 'There were N errors in input file(s)' (grompp's box / cut-off and similar checks)."""
    from .gromacs import distill_error
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


def _mdrun_failure(stage_dir: Path, extra: str = "") -> str:
    distill_error = distill
    texts = [extra]
    for name in ("mdrun.out", "md.log", f"{stage_dir.name}.log"):
        for p in stage_dir.rglob(name):
            texts.append(p.read_text(errors="replace"))
    for t in texts:
        if t and re.search(r"^(Fatal error|Error in user input|Inconsistency in user input)", t, re.M):
            return distill_error(t)
    for t in texts:
        m = re.search(r"^.*(what\(\):|Segmentation fault|Maximum force\s+=\s+(inf|nan)).*$", t or "", re.M)
        if m:
            return m.group(0).strip()
    return distill_error("\n".join(t for t in texts if t))


def run_stage_gmx(stage, stage_dir: Path, mdp: Path, conf: Path, ref, top: Path, nsteps: int,
                  options: RelaxOptions, gmx: str) -> tuple:
    """grompp + mdrun through the gmx command line. Returns (conf out, log)."""
    from .gromacs import run_gmx
    tpr = stage_dir / f"{stage}.tpr"
    try:
        proc = subprocess.run([gmx, "-quiet", *_grompp_args(mdp, conf, ref, top, tpr, options.maxwarn)],
                              cwd=stage_dir, capture_output=True, text=True)
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
    return stage_dir / f"{stage}.gro", stage_dir / f"{stage}.log"


def run_stage_gmxapi(stage, stage_dir: Path, mdp: Path, conf: Path, ref, top: Path, nsteps: int,
                     options: RelaxOptions, gmx: str) -> tuple:
    """commandline_operation(grompp) -> read_tpr -> modify_input(nsteps) -> mdrun, in a child Python
    process working in ``stage_dir``: a GROMACS fatal error inside ``gmxapi.mdrun`` ends the process it
    runs in (measured: no Python exception, the interpreter just exits), and in-process mdrun pins cores.
    The child's output goes to ``stage_dir/mdrun.out``."""
    spec = {"stage": stage, "mdp": str(mdp), "conf": str(conf), "ref": None if ref is None else str(ref),
            "top": str(top), "tpr": str(stage_dir / f"{stage}.tpr"), "nsteps": int(nsteps),
            "maxwarn": int(options.maxwarn), "threads": int(options.threads), "gmx": gmx}
    spec_path = stage_dir / "gmxapi_stage.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from gmx_dbm.relax import _gmxapi_stage_main; sys.exit(_gmxapi_stage_main(sys.argv[1]))"
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
        raise GromacsError(f"gmxapi.mdrun ({stage}) failed ({how}): {_mdrun_failure(stage_dir)}",
                           workdir=stage_dir)
    directory = Path(result["directory"])
    return directory / "confout.gro", directory / "md.log"


def _gmxapi_stage_main(spec_path) -> int:
    """Child-process body of ``run_stage_gmxapi``; writes gmxapi_result.json next to the spec."""
    distill_error = distill
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
        out.write_text(json.dumps({"error": f"gmx grompp failed (exit {rc}): {distill_error(text)}"}))
        return 3
    simulation_input = gmxapi.modify_input(gmxapi.read_tpr(tpr), parameters={"nsteps": spec["nsteps"]})
    runtime = {"-pin": "off"}
    if spec["threads"]:
        runtime["-nt"] = str(spec["threads"])
    md = gmxapi.mdrun(simulation_input, runtime_args=runtime)
    md.run()
    out.write_text(json.dumps({"directory": md.output.directory.result()}))
    return 0


# ----------------------------------------------------------------------------------------------------
# relaxing frames

@dataclass
class FrameResult:
    index: int
    workdir: str
    positions: np.ndarray
    box: np.ndarray
    em: StageResult | None
    md: StageResult | None
    restrained_rms: float | None       # nm, restrained atoms: final vs restraint reference
    heavy_rms: float | None            # nm, heavy atoms: final vs input
    seconds: float

    def summary(self) -> dict:
        def st(s):
            if s is None:
                return None
            return {k: getattr(s, k) for k in ("steps", "converged", "epot", "fmax", "nsteps", "seconds",
                                                 "constraint_warnings", "log")}
        return {"frame": self.index, "workdir": self.workdir, "em": st(self.em), "md": st(self.md),
                "restrained_rms_nm": self.restrained_rms, "heavy_rms_nm": self.heavy_rms,
                "seconds": self.seconds}


def _rms(a, b, box, idx) -> float | None:
    if len(idx) == 0:
        return None
    d = minimum_image(b[idx] - a[idx], box)
    return float(np.sqrt((d ** 2).sum(-1).mean()))


class Relaxer:
    """Relax frames of one topology: prepares the work directory once, then ``frame(...)`` per frame."""

    def __init__(self, topology, workdir, options: RelaxOptions | None = None, defines=None, include_dirs=None):
        from .gromacs import find_gmx
        from .io import AtomInfo
        self.options = options or RelaxOptions()
        self.options.check()
        self.workdir = Path(workdir).resolve()
        self.gmx = find_gmx()
        self.engine = choose_engine(self.options.engine)
        self.prepared = prepare_topology(topology, self.workdir, self.options.restrain, self.options.fc,
                                         defines, include_dirs)
        self.atoms = AtomInfo.from_topology(self.prepared.flat)
        user = read_mdp(self.options.mdp) if self.options.mdp else {}
        self.mdp = {}
        for stage in ("em", "md"):
            text, nsteps = make_mdp(stage, self.options, self.prepared, user)
            path = self.workdir / f"{stage}.mdp"
            path.write_text(text)
            self.mdp[stage] = (path, nsteps)
        log.info("relax: engine %s, work directory %s, %d restrained atoms (%s, fc %g)", self.engine,
                 self.workdir, len(self.prepared.restrained), self.options.restrain, self.options.fc)

    @property
    def n_atoms(self) -> int:
        return int(self.prepared.flat.n_atoms)

    def _stage(self, stage, fdir: Path, conf: Path, ref) -> StageResult:
        sdir = fdir / stage
        sdir.mkdir(parents=True, exist_ok=False)
        mdp, nsteps = self.mdp[stage]
        run = run_stage_gmxapi if self.engine == "gmxapi" else run_stage_gmx
        t0 = time.perf_counter()
        out_conf, log_path = run(stage, sdir, mdp, conf, ref, self.prepared.top, nsteps, self.options, self.gmx)
        dt = time.perf_counter() - t0
        if not Path(out_conf).is_file():
            raise GromacsError(f"{stage}: mdrun wrote no final structure: {_mdrun_failure(sdir)}", workdir=sdir)
        res = StageResult(stage, str(sdir), str(log_path), str(out_conf), nsteps, dt,
                          **parse_log(stage, Path(log_path)))
        if stage == "em" and res.fmax is not None and not math.isfinite(res.fmax):
            raise GromacsError(f"energy minimisation stopped after {res.steps} steps with an infinite force "
                               "(atoms on top of each other in the start structure? see --min-distance)",
                               workdir=sdir)
        return res

    def frame(self, frame, index: int = 0, reference=None) -> FrameResult:
        """Relax one Frame (positions in topology order). ``reference``: restraint reference positions
        (default: the frame itself)."""
        from .io import Frame, open_writer, read_frame
        t0 = time.perf_counter()
        fdir = self.workdir / f"frame{index:04d}"
        fdir.mkdir(parents=True, exist_ok=False)
        conf = fdir / "start.gro"
        start = np.asarray(frame.positions, float)
        if reference is None and self.options.min_distance > 0:
            start, n_close = separate_overlaps(start, frame.box, self.options.min_distance, seed=index)
            if n_close:
                reference = np.asarray(frame.positions, float)
                log.warning("frame %d: %d atom pairs closer than %g nm pushed apart before EM (restraint "
                            "reference unchanged)", index, n_close, self.options.min_distance)
        with open_writer(conf, self.atoms) as w:
            w.write(Frame(start, np.asarray(frame.box, float), frame.time, frame.step))
        ref = None
        if len(self.prepared.restrained):
            ref = conf
            if reference is not None:
                ref = fdir / "reference.gro"
                with open_writer(ref, self.atoms) as w:
                    w.write(Frame(np.asarray(reference, float), np.asarray(frame.box, float)))
        em = md = None
        current = conf
        if self.options.steps_em > 0:
            em = self._stage("em", fdir, current, ref)
            current = Path(em.conf)
            log.info("frame %d: EM %s in %s steps, Epot %.4g kJ/mol, Fmax %.3g (%.1f s)", index,
                     "converged" if em.converged else "did NOT converge", em.steps, em.epot or float("nan"),
                     em.fmax or float("nan"), em.seconds)
        if self.options.md_ps > 0:
            md = self._stage("md", fdir, current, ref)
            current = Path(md.conf)
            log.info("frame %d: MD %d steps, <Epot> %.4g kJ/mol, %d constraint warnings (%.1f s)", index,
                     md.nsteps, md.epot if md.epot is not None else float("nan"), md.constraint_warnings,
                     md.seconds)
        final = read_frame(current, n_atoms=self.n_atoms)
        refpos = np.asarray(frame.positions if reference is None else reference, float)
        box = np.asarray(final.box, float)
        return FrameResult(index, str(fdir), final.positions, box, em, md,
                           _rms(refpos, final.positions, box, self.prepared.restrained),
                           _rms(np.asarray(frame.positions, float), final.positions, box, self.prepared.heavy),
                           time.perf_counter() - t0)


def fresh_workdir(workdir=None, output=None) -> Path:
    """``workdir`` itself when it does not exist or is empty, else a fresh folder inside it; without
    ``workdir`` a fresh ``gmx_dbm_relax_<output stem>_*`` folder next to the output."""
    if workdir is not None:
        w = Path(workdir)
        if not w.exists() or (w.is_dir() and not any(w.iterdir())):
            w.mkdir(parents=True, exist_ok=True)
            return w.resolve()
        if not w.is_dir():
            raise InputError("work directory path exists and is not a folder", path=w)
        return Path(tempfile.mkdtemp(prefix="run_", dir=w)).resolve()
    base = Path(output).resolve().parent if output is not None else Path.cwd()
    stem = Path(output).stem if output is not None else "run"
    return Path(tempfile.mkdtemp(prefix=f"gmx_dbm_relax_{stem}_", dir=base)).resolve()


def relax(conf, topology, output, options: RelaxOptions | None = None, workdir=None, defines=None,
          include_dirs=None, frames=None) -> dict:
    """Relax every frame of ``conf`` (.gro/.xtc/.pdb) and stream the results to ``output``.
    Returns a summary (work directory, per-frame EM/MD results)."""
    from .io import Frame, open_writer, read_frames
    from .io.safe import check_writable
    from .errors import TrajectoryError
    options = options or RelaxOptions()
    options.check()
    check_writable(output)
    wd = fresh_workdir(workdir, output)
    try:
        relaxer = Relaxer(topology, wd, options, defines, include_dirs)
        t0 = time.perf_counter()
        results = []
        with open_writer(output, relaxer.atoms) as writer:
            for i, fr in enumerate(read_frames(conf, n_atoms=relaxer.n_atoms)):
                if frames is not None and i not in frames:
                    continue
                res = relaxer.frame(fr, i)
                writer.write(Frame(res.positions, res.box, time=fr.time, step=fr.step))
                results.append(res.summary())
            if not results:
                raise TrajectoryError("contains no frames", path=conf)
    except GmxDbmError as exc:
        # bad input (or no GROMACS) leaves nothing behind: the work directory we made beside the output
        # goes too; GROMACS failures keep theirs for inspection, and a --workdir the user named stays
        ran = any(wd.glob("frame*"))  # frames already relaxed keep their logs
        if workdir is None and ((isinstance(exc, InputError) and not ran) or not any(wd.iterdir())):
            import shutil
            shutil.rmtree(wd, ignore_errors=True)
        raise
    summary = {"workdir": str(wd), "engine": relaxer.engine, "frames": results,
               "seconds": time.perf_counter() - t0, "output": str(output)}
    log.info("wrote %s: %d relaxed frames in %.1f s (work directory %s)", output, len(results),
             summary["seconds"], wd)
    return summary


# ----------------------------------------------------------------------------------------------------
# gmxapi workflow step

def _backmap_files(cg: str, topology: str, mapping: str, model: str, workdir: str, frame: int, seed: int,
                   gibbs: int, restrain: str, fc: float, temperature: float, md_ps: float,
                   steps_em: int, output):
    """The body of ``backmap_step``: backmap frame ``frame`` of ``cg`` and write the GROMACS inputs."""
    from .backmap import backmap
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    conf = wd / "backmapped.gro"
    maps = [m for m in mapping.split(os.pathsep) if m]
    backmap(cg, topology, maps, conf, model=model or None, gibbs=gibbs, seed=seed, progress=False,
            frames={frame})
    options = RelaxOptions(steps_em=steps_em, md_ps=md_ps, temperature=temperature, restrain=restrain, fc=fc)
    prepared = prepare_topology(topology, wd, restrain, fc)
    from .io import AtomInfo, Frame, open_writer, read_frame
    fr = read_frame(conf, n_atoms=prepared.flat.n_atoms)
    start, n_close = separate_overlaps(fr.positions, fr.box, options.min_distance)
    if n_close:
        log.warning("%d atom pairs closer than %g nm pushed apart in start.gro", n_close, options.min_distance)
    with open_writer(wd / "start.gro", AtomInfo.from_topology(prepared.flat)) as w:
        w.write(Frame(start, fr.box))
    paths = {}
    for stage in ("em", "md"):
        text, _ = make_mdp(stage, options, prepared)
        (wd / f"{stage}.mdp").write_text(text)
        paths[stage] = str(wd / f"{stage}.mdp")
    output.conf = str(wd / "start.gro")
    output.reference = str(conf)
    output.topology = str(prepared.top)
    output.em_mdp = paths["em"]
    output.md_mdp = paths["md"]
    output.md_nsteps = int(round(md_ps / options.dt))


_BACKMAP_OP = None


def backmap_step(cg, topology, mapping, model=None, workdir="backmap_step", frame: int = 0, seed: int = 0,
                 gibbs: int = 4, restrain: str = "heavy", fc: float = 1000.0, temperature: float = 300.0,
                 md_ps: float = 10.0, steps_em: int = 5000):
    """A gmxapi operation: backmap one CG frame; outputs ``conf`` (start structure: the backmapped .gro
    with overlapping atoms pushed apart), ``reference`` (the backmapped .gro: restraint reference), ``topology`` (wrapper .top with restraints under -DGMX_DBM_POSRES), ``em_mdp``, ``md_mdp``
    (their include paths and defines are set) and ``md_nsteps``. Feed them to
    ``gmxapi.commandline_operation(gmx, ['grompp'], input_files={'-f': ..., '-c': ..., '-r': ..., '-p': ...})``.
    ``mapping``: a path, or several joined by os.pathsep."""
    global _BACKMAP_OP
    gmxapi = import_gmxapi()
    if gmxapi is None:
        raise GromacsError("gmxapi is not importable: backmap_step needs it (install gmxapi, see docs/RELAX.md)")
    if _BACKMAP_OP is None:
        # gmxapi reads the annotations as types; this module's are strings (from __future__ import annotations)
        _backmap_files.__annotations__ = {"cg": str, "topology": str, "mapping": str, "model": str, "workdir": str,
                                          "frame": int, "seed": int, "gibbs": int, "restrain": str, "fc": float,
                                          "temperature": float, "md_ps": float, "steps_em": int}
        _BACKMAP_OP = gmxapi.function_wrapper(
            output={"conf": str, "reference": str, "topology": str, "em_mdp": str, "md_mdp": str, "md_nsteps": int})(_backmap_files)
    if not isinstance(mapping, str):
        mapping = os.pathsep.join(str(m) for m in mapping)
    return _BACKMAP_OP(cg=str(cg), topology=str(Path(topology).resolve()), mapping=mapping,
                       model=str(model or ""), workdir=str(Path(workdir).resolve()), frame=int(frame),
                       seed=int(seed), gibbs=int(gibbs), restrain=restrain, fc=float(fc),
                       temperature=float(temperature), md_ps=float(md_ps), steps_em=int(steps_em))


def _join_path(directory: str = "", name: str = "", output=None):
    output.path = os.path.join(directory, name)


_JOIN_OP = None


def output_file(directory, name: str = "confout.gro"):
    """A gmxapi operation joining an mdrun output directory (a future) and a file name: its
    ``output.path`` feeds the next grompp's ``-c``."""
    global _JOIN_OP
    gmxapi = import_gmxapi()
    if _JOIN_OP is None:
        _join_path.__annotations__ = {"directory": str, "name": str}
        _JOIN_OP = gmxapi.function_wrapper(output={"path": str})(_join_path)
    return _JOIN_OP(directory=directory, name=name)
