#!/usr/bin/env python3
"""Equilibrate an all-atom melt with GROMACS and write reference frames of it (e.g. the sPS melt of three
chain lengths that scripts/make_chain_mixture.py cuts from the 10-mer melt: its new chain ends start from
capped, never-equilibrated geometry).

One NPT run (``gmx grompp`` + ``gmx mdrun``) from the first frame of ``--conf``: velocities drawn at
``--temperature``, v-rescale thermostat (tau 0.2 ps), C-rescale barostat at 1 bar (isotropic, tau 2 ps:
the monomers cut out leave holes that the melt closes), 2 fs steps with every bond constrained (LINCS, as
the reference sPS MD held its bonds), reaction field (epsilon_rf 2.5) and LJ cut at 1.0 nm with the
dispersion correction, as in the published sPS runs (thermostat and barostat are this script's choice).
The first ``--equilibrate`` ps are discarded; frames every ``--every`` ps of the next ``--sample`` ps are
written to OUT/aa.xtc, the last one to OUT/aa.gro.

Equilibrium check, printed as a table: for each window of the run (the equilibration cut into quarters,
then the sampled part cut into halves), the mean density and angle, proper-dihedral and LJ energies of
the window's energy frames, and the Jensen-Shannon divergence of the chain-end proper dihedrals against
the last sampled window. Chain ends are counted in the atom order of topologies/make_topologies.py's sPS
chains (``--end-atoms``: the first monomer's 16 atoms, the last monomer's and the two chain-end hydrogens,
which come last); for other molecules give their own count. Local structure is equilibrated when the
energies no longer drift and the divergence has dropped to the level the two sampled halves show against
each other.

Usage (from the repository root):
    .venv/bin/python scripts/equilibrate_melt.py --top DIR/topol.top --conf DIR/aa.gro --out OUT
        [--temperature 453] [--equilibrate 100] [--sample 200] [--every 2.5] [--threads 2] [--seed 453]
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
from pathlib import Path

import numpy as np

from gmx_dbm import metrics
from gmx_dbm.gromacs import edr_energies, run_gmx
from gmx_dbm.io import AtomInfo, open_writer, read_frames
from gmx_dbm.topology import read_topology

log = logging.getLogger("equilibrate_melt")

MDP = """; NPT equilibration of an all-atom melt (written by scripts/equilibrate_melt.py)
integrator              = md
dt                      = 0.002
nsteps                  = {nsteps}
comm-mode               = linear
nstcalcenergy           = {nstcalc}
nstenergy               = {nstout}
nstlog                  = {nstout}
nstxout-compressed      = {nstout}
compressed-x-precision  = 1000
cutoff-scheme           = Verlet
pbc                     = xyz
coulombtype             = reaction-field
rcoulomb                = 1.0
epsilon-rf              = 2.5
vdwtype                 = cut-off
rvdw                    = 1.0
DispCorr                = EnerPres
tcoupl                  = v-rescale
tc-grps                 = system
tau-t                   = 0.2
ref-t                   = {temperature}
pcoupl                  = C-rescale
pcoupltype              = isotropic
tau-p                   = 2.0
compressibility         = 4.5e-5
ref-p                   = 1.0
gen-vel                 = yes
gen-temp                = {temperature}
gen-seed                = {seed}
constraints             = all-bonds
constraint-algorithm    = lincs
lincs-order             = 4
lincs-iter              = 2
"""


def end_dihedrals(flat, n_end: int = 16, n_extra: int = 2) -> np.ndarray:
    """Proper dihedrals (k, 4) with an atom among the first ``n_end`` or the last ``n_end + n_extra`` atoms
    of a molecule (sps(n)'s order: first and last monomer, then the two extra chain-end hydrogens)."""
    sets = metrics.interaction_sets(flat)
    idx = np.asarray(sets["proper"])
    near_end = np.zeros(flat.n_atoms, dtype=bool)
    starts = np.flatnonzero(np.diff(flat.mol_index, prepend=-1))
    for start, stop in zip(starts, [*starts[1:], flat.n_atoms]):
        near_end[start:start + n_end] = True
        near_end[max(start, stop - n_end - n_extra):stop] = True
    return idx[near_end[idx].any(axis=1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", required=True)
    ap.add_argument("--conf", required=True, help="starting structure (.gro)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--temperature", type=float, default=453.0)
    ap.add_argument("--equilibrate", type=float, default=100.0, help="ps discarded")
    ap.add_argument("--sample", type=float, default=200.0, help="ps sampled after the equilibration")
    ap.add_argument("--every", type=float, default=2.5, help="ps between written frames")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=453)
    ap.add_argument("--end-atoms", type=int, default=16, help="atoms of a chain's end monomer (sPS: 16)")
    args = ap.parse_args()
    if not (args.every > 0 and args.equilibrate >= 0 and args.sample >= args.every):
        ap.error("need --every > 0, --equilibrate >= 0 and --sample >= --every")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out = Path(args.out)
    work = out / "md"
    work.mkdir(parents=True, exist_ok=True)
    nstout = int(round(args.every / 0.002))
    nsteps = int(round((args.equilibrate + args.sample) / 0.002))
    (work / "md.mdp").write_text(MDP.format(nsteps=nsteps, nstout=nstout, nstcalc=math.gcd(nstout, 100),
                                            temperature=args.temperature, seed=args.seed))
    top = Path(args.top).resolve()
    run_gmx(["grompp", "-f", "md.mdp", "-c", Path(args.conf).resolve(), "-p", top, "-o", "md.tpr",
             "-po", "mdout.mdp"], cwd=work)
    log.info("mdrun: %d steps (%.0f ps) on %d threads", nsteps, nsteps * 0.002, args.threads)
    run_gmx(["mdrun", "-deffnm", "md", "-nt", str(args.threads), "-pin", "off"], cwd=work)

    flat = read_topology(str(top)).flat()
    frames = list(read_frames(str(work / "md.xtc"), n_atoms=flat.n_atoms))
    energies = edr_energies(work / "md.edr", times=True)
    sampled = [f for f in frames if f.time > args.equilibrate + 1e-6]
    shutil.copy(work / "md.tpr", out / "md.tpr")
    atoms = AtomInfo.from_topology(flat)
    with open_writer(out / "aa.xtc", atoms) as w:
        for f in sampled:
            w.write(f)
    with open_writer(out / "aa.gro", atoms, title=f"equilibrated at {args.temperature:g} K") as w:
        w.write(sampled[-1])
    log.info("wrote %d frames (%.1f-%.1f ps) to %s", len(sampled), sampled[0].time, sampled[-1].time, out / "aa.xtc")

    # equilibrium table
    idx = end_dihedrals(flat, args.end_atoms)
    eq = args.equilibrate
    windows = [(eq * k / 4, eq * (k + 1) / 4) for k in range(4)]
    half = eq + args.sample / 2
    windows += [(eq, half), (half, eq + args.sample + 1e-6)]

    def hist(lo, hi):   # the window's frames (windows are (lo, hi], like the energy frames')
        vals = [metrics.values("proper", f.positions[None], f.box[None], idx) for f in frames if lo < f.time <= hi]
        return metrics.histogram("proper", np.concatenate(vals))

    last = hist(*windows[-1])
    print(f"\n{len(idx)} chain-end proper dihedrals; energies kJ/mol, mean over each window's frames")
    print("| window (ps) | density (kg/m3) | angle E | proper dih E | LJ (SR) E | end-dihedral JSD vs last window |")
    print("|---|---|---|---|---|---|")
    terms = ("Density", "Angle", next((k for k in ("Proper Dih.", "Ryckaert-Bell.") if k in energies), "Proper Dih."),
             "LJ (SR)")
    e_times = energies["Time"]
    for n, (lo, hi) in enumerate(windows):
        sel = (e_times > lo) & (e_times <= hi)
        if not sel.any() or not any(lo < f.time <= hi for f in frames):
            print(f"| {lo:g}-{hi:g} | no frame in this window | | | | |")
            continue
        row = [energies[k][sel].mean() if k in energies else float("nan") for k in terms]
        print(f"| {lo:g}-{hi:g} | {row[0]:.1f} | {row[1]:.0f} | {row[2]:.0f} | {row[3]:.0f} | "
              f"{metrics.jsd(last if n == len(windows) - 1 else hist(lo, hi), last):.4f} |")


if __name__ == "__main__":
    main()
