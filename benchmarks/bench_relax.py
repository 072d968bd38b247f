"""Backmapped-then-relaxed versus a classical start, through the same GROMACS relaxation.

For one sPS frame of the shared 568 K training set (CG frame k, its all-atom reference frame k) the starts
are relaxed with ``gmx_dbm.relax`` (steepest descent to Fmax < emtol, then heavy-atom-restrained NVT MD):

- ``deepBackmap (model)``: this project's model on CG frame k (``--model PATH`` overrides; default: the
  shipped sPS model, gmx_dbm/data/models/sps.safetensors, the one ``gmx_dbm backmap`` picks for
  topologies/sps.top; ``--no-model`` skips it);
- ``deepBackmap (published)``: frame k of the published deepBackmap output (t568_train/deepbackmap.xtc);
- ``classical random``: every atom placed uniformly at random within ``--radius`` nm of its bead centre.

For the start, the EM result and the MD result: potential energy (``gmx mdrun -rerun`` with the project
topology and the reference settings, no restraints), bonded JSD against the reference frame
(gmx_dbm.metrics.bonded_jsd), clashes (gmx_dbm.quality.StructureChecks: pairs more than two bonds apart
< 0.1 nm); EM steps and whether EM converged, wall times. Prints a Markdown table.

    .venv/bin/python benchmarks/bench_relax.py [--frame 0] [--md-ps 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gmx_dbm.io import AtomInfo, Frame, open_writer, read_frames  # noqa: E402
from gmx_dbm.topology import read_topology  # noqa: E402
from gmx_dbm.mapping import read_mapping  # noqa: E402
from gmx_dbm.metrics import bonded_jsd  # noqa: E402
from gmx_dbm.relax import Relaxer, RelaxOptions, fresh_workdir  # noqa: E402

SHARED = Path(os.environ.get("GMX_DBM_SHARED_DATA", ROOT.parent / "shared" / "data"))
TOP = ROOT / "topologies" / "sps.top"
MAP = ROOT / "mappings" / "sps.map"


def nth(path, k, n_atoms):
    for i, fr in enumerate(read_frames(path, n_atoms=n_atoms)):
        if i == k:
            return fr
    raise SystemExit(f"{path} has no frame {k}")


def random_start(cg_frame, mflat, n_atoms, radius, seed):
    rng = np.random.default_rng(seed)
    centres = cg_frame.positions[mflat.atom_bead]
    v = rng.normal(size=(n_atoms, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = radius * rng.random(n_atoms) ** (1 / 3)
    return centres + v * r[:, None]


def rerun_potential(confs, box, atoms, workdir):
    """Potential energy (kJ/mol) of each configuration: gmx grompp + mdrun -rerun, reference settings."""
    from gmx_dbm.ff.forcefield import NonbondedSettings
    from gmx_dbm.gromacs import rerun_energies
    workdir.mkdir(parents=True, exist_ok=True)
    traj = workdir / "confs.gro"
    with open_writer(traj, atoms) as w:
        for k, pos in enumerate(confs):
            w.write(Frame(np.asarray(pos, float), box, time=float(k)))
    e = rerun_energies(TOP, traj, workdir, settings=NonbondedSettings(), traj=traj)
    return [float(v) for v in e["Potential"]]


def clashes(flat, pos, box):
    from gmx_dbm.quality import StructureChecks
    return StructureChecks(flat).clashes(pos, box)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--set", default="t568_train", help="shared sPS set (t568_train or t453)")
    ap.add_argument("--model", default=None, help="a .safetensors model (default: the shipped sps model)")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--start", default=None, help="an already backmapped frame instead of running --model")
    ap.add_argument("--start-label", default="deepBackmap (given)")
    ap.add_argument("--radius", type=float, default=0.1, help="classical start: max distance from the bead (nm)")
    ap.add_argument("--steps-em", type=int, default=5000)
    ap.add_argument("--emtol", type=float, default=500.0)
    ap.add_argument("--md-ps", type=float, default=2.0)
    ap.add_argument("--temperature", type=float, default=568.0)
    ap.add_argument("--engine", default="gmxapi", choices=["gmxapi", "gmx"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for noisy in ("MDAnalysis", "parmed"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    data = SHARED / "sps" / args.set
    system = read_topology(TOP)
    flat = system.flat()
    mflat = read_mapping([MAP], system).flat()
    atoms = AtomInfo.from_topology(flat)
    n = flat.n_atoms
    ref = nth(data / "aa.xtc", args.frame, n)
    cg = nth(data / "cg.xtc", args.frame, mflat.n_beads)
    box = np.asarray(ref.box, float)
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench_relax_"))
    base.mkdir(parents=True, exist_ok=True)

    starts = {}
    backmap_s = {}
    if args.start:
        starts[args.start_label] = nth(args.start, 0, n).positions
    elif not args.no_model:
        from gmx_dbm.backmap import shipped_model_path
        model = args.model or str(shipped_model_path("sps"))
        if not Path(model).is_file():
            sys.exit(f"bench_relax: model {model} not found (the shipped sps model is package data: "
                     "gmx_dbm/data/models/sps.safetensors); pass --model PATH or --no-model")
        local = base / "model.safetensors"
        local.write_bytes(Path(model).read_bytes())  # a training run may replace its file while we read it
        from gmx_dbm.backmap import backmap
        cg_file = base / "cg_frame.gro"
        with open_writer(cg_file, AtomInfo(mflat.bead_names, np.array(["CG"] * mflat.n_beads),
                                           np.arange(1, mflat.n_beads + 1))) as w:
            w.write(cg)
        t0 = time.perf_counter()
        backmap(cg_file, TOP, [MAP], base / "backmapped.gro", model=local, progress=False)
        backmap_s["deepBackmap (model)"] = time.perf_counter() - t0
        starts[f"deepBackmap (model {Path(model).name})"] = nth(base / "backmapped.gro", 0, n).positions
    pub = data / "deepbackmap.xtc"
    if pub.is_file():
        starts["deepBackmap (published)"] = nth(pub, args.frame, n).positions
    starts["classical random"] = random_start(cg, mflat, n, args.radius, seed=args.frame)

    options = RelaxOptions(steps_em=args.steps_em, emtol=args.emtol, md_ps=args.md_ps,
                           temperature=args.temperature, engine=args.engine)
    rows = []
    ref_row = {"start": "reference (all-atom MD)", "stage": "-", "clashes": clashes(flat, ref.positions, box)}
    ref_row.update(bonded_jsd(flat, ref.positions[None], ref.positions[None], box[None]))
    ref_row["epot"] = rerun_potential([ref.positions], box, atoms, base / "rerun_ref")[0]
    rows.append(ref_row)
    for name, pos in starts.items():
        wd = fresh_workdir(base / name.split()[0].replace("(", "").lower() / "")
        relaxer = Relaxer(TOP, wd, RelaxOptions(**vars(options)))
        res = relaxer.frame(Frame(pos, box), 0)
        confs = {"start": pos}
        if res.em is not None:
            confs["after EM"] = nth(res.em.conf, 0, n).positions
        confs["after MD"] = res.positions
        epots = rerun_potential(list(confs.values()), box, atoms, wd / "rerun")
        for (stage, p), e in zip(confs.items(), epots):
            row = {"start": name, "stage": stage, "epot": e, "clashes": clashes(flat, p, box)}
            row.update(bonded_jsd(flat, ref.positions[None], np.asarray(p)[None], box[None]))
            if stage == "after EM":
                row.update(em_steps=res.em.steps, em_converged=res.em.converged, seconds=res.em.seconds)
            if stage == "after MD":
                row.update(seconds=res.md.seconds if res.md else None, heavy_rms=res.heavy_rms,
                           constraint_warnings=res.md.constraint_warnings if res.md else None)
            if stage == "start" and name.startswith("deepBackmap (model"):
                row["seconds"] = backmap_s.get("deepBackmap (model)")
            rows.append(row)

    def f(v, fmt):
        return "" if v is None else (fmt.format(v) if not isinstance(v, str) else v)
    print(f"\nsPS {args.set} frame {args.frame}, {n} atoms; EM steep emtol {args.emtol:g} (max {args.steps_em}), "
          f"MD {args.md_ps:g} ps at {args.temperature:g} K, heavy atoms restrained (1000 kJ/mol/nm2), "
          f"engine {args.engine}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| start | stage | Epot (kJ/mol) | bond JSD | angle JSD | proper JSD | improper JSD | clashes "
          "| EM steps | wall (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        steps = "" if "em_steps" not in r else f"{r['em_steps']}{'' if r['em_converged'] else ' (not conv.)'}"
        print(f"| {r['start']} | {r['stage']} | {f(r.get('epot'), '{:.4g}')} | {f(r.get('bond_jsd'), '{:.3f}')} "
              f"| {f(r.get('angle_jsd'), '{:.3f}')} | {f(r.get('proper_jsd'), '{:.3f}')} "
              f"| {f(r.get('improper_jsd'), '{:.3f}')} | {f(r.get('clashes'), '{}')} | {steps} "
              f"| {f(r.get('seconds'), '{:.1f}')} |")
    print(f"\nwork directories under {base}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
