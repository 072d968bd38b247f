"""The run parameters of the EM and MD stages (``make_mdp``) and the electrostatics they use.

Entries of a user .mdp (``gmx_dbm.io.mdp.read_mdp``) override the generated ones, except ``nsteps``
(set from the options) and an ``integrator`` of the other stage's kind; its ``define`` and ``include``
are added to the generated ones.
"""
from __future__ import annotations

import numpy as np

from ..io.mdp import MdpFile, normalise_key
from .options import RelaxOptions
from .topology import POSRES_DEFINE, PreparedTopology

EM_INTEGRATORS = ("steep", "cg", "l-bfgs")
MD_INTEGRATORS = ("md", "md-vv", "md-vv-avek", "sd", "bd")


def electrostatics(system) -> dict:
    """PME when a molecule carries a net charge, else reaction field (epsilon-rf 0 = conducting)."""
    net = 0.0
    for name, count in system.molecules:
        if not count:
            continue
        q = np.asarray(system.moleculetypes[name].atom_attr("charge"), dtype=float)
        net = max(net, abs(float(q.sum())))
    if net > 1e-3:
        return {"coulombtype": "PME", "rcoulomb": "1.0", "fourierspacing": "0.12"}
    return {"coulombtype": "reaction-field", "rcoulomb": "1.0", "epsilon-rf": "0"}


def mdp_defines(user) -> list:
    """The -D items ('NAME' or 'NAME=VALUE') of a user .mdp's ``define`` entry: grompp reads the topology
    with them."""
    text = "" if user is None else user.get("define", "")
    return [w[2:] for w in text.split() if w.startswith("-D") and len(w) > 2]


def make_mdp(stage: str, options: RelaxOptions, prepared: PreparedTopology, user=None) -> tuple:
    """(mdp text, nsteps) for stage 'em' or 'md'. ``user``: an ``MdpFile`` or a {key: value} dict."""
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
                  # v-rescale's noise: GROMACS's default (-1) draws a new seed per run, so that not even
                  # two runs of one frame agree; with it fixed a run repeats bit for bit (one thread)
                  "ld-seed": str(options.seed),
                  "continuation": "no", "comm-mode": "linear", "nstcalcenergy": "100",
                  "nstenergy": "100", "nstlog": "1000", "lincs-warnangle": "30"})
    user = dict(user.values) if isinstance(user, MdpFile) else {normalise_key(k): v for k, v in (user or {}).items()}
    uint = user.pop("integrator", None)
    if uint is not None:
        if stage == "em" and uint.lower() in EM_INTEGRATORS:
            p["integrator"] = uint
        elif stage == "md" and uint.lower() in MD_INTEGRATORS:
            p["integrator"] = uint
    user.pop("nsteps", None)
    udefine = user.pop("define", "")
    uinclude = user.pop("include", "")
    norm = {normalise_key(k): k for k in p}
    for k, v in user.items():
        p.pop(norm.get(k, k), None)
        p[k] = v
    if stage == "md" and str(p.get("pcoupl", "no")).lower() not in ("no", "") and "refcoord-scaling" not in p:
        p["refcoord-scaling"] = "com"
    dt = float(p.get("dt", options.dt))
    nsteps = options.steps_em if stage == "em" else int(round(options.md_ps / dt))
    p["nsteps"] = str(nsteps)
    # the user's define entry may repeat items the topology was prepared with: each once
    defines = list(dict.fromkeys([f"-D{d}" for d in prepared.defines] + udefine.split()))
    if len(prepared.restrained):
        defines.append(f"-D{POSRES_DEFINE}")
    if defines:
        p["define"] = " ".join(defines)
    p["include"] = " ".join([f"-I{d}" for d in prepared.include_dirs] + ([uinclude] if uinclude else []))
    width = max(len(k) for k in p)
    text = f"; gmx_dbm relax: {stage} stage (generated; entries of a user .mdp override)\n"
    text += "".join(f"{k:<{width}} = {v}\n" for k, v in p.items())
    return text, nsteps
