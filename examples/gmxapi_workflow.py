"""A gmxapi workflow: backmap a CG frame with gmx_dbm, then energy minimisation and position-restrained
MD with gmxapi's own operations (commandline_operation for grompp, read_tpr, modify_input, mdrun).

    .venv/bin/python examples/gmxapi_workflow.py --workdir /tmp/wf
    .venv/bin/python examples/gmxapi_workflow.py --model my_model.safetensors --workdir /tmp/wf

Without ``--model`` the backmap uses the model shipped with the package that fits the topology
(gmx_dbm/data/models/sps.safetensors for the default sPS inputs), as ``gmx_dbm backmap`` does.

``gmx_dbm.workflow.backmap_step`` is a gmxapi operation: its outputs (file paths) feed grompp directly.
gmxapi creates its operation folders in the current directory, so the script works inside --workdir
(a fresh folder per run: a second mdrun from the same folder would take the old checkpoint as a restart).
mdrun runs inside this Python process (a GROMACS fatal error ends it); ``-pin off`` keeps the process
free to use every core afterwards. ``gmx_dbm relax`` runs the same steps with error reporting.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gmxapi

from gmx_dbm.backmap import SHIPPED_MODELS
from gmx_dbm.gromacs import find_gmx
from gmx_dbm.workflow import backmap_step, output_file

ROOT = Path(__file__).resolve().parents[1]


def checked(op, what):
    """The returncode of a commandline_operation, with its stderr on failure."""
    if op.output.returncode.result() != 0:
        sys.exit(f"{what} failed:\n{op.output.stderr.result()}")
    return op


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cg", default=str(ROOT / "examples" / "sps" / "cg.gro"))
    ap.add_argument("--topology", default=str(ROOT / "topologies" / "sps.top"))
    ap.add_argument("--mapping", default=str(ROOT / "mappings" / "sps.map"))
    ap.add_argument("--model", default=None,
                    help="a .safetensors model or a shipped model name (sps, transfer); default: the shipped "
                         "model that fits the topology (sps for the default inputs)")
    ap.add_argument("--gibbs", type=int, default=4)
    ap.add_argument("--steps-em", type=int, default=5000)
    ap.add_argument("--md-ps", type=float, default=10.0)
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--workdir", default="gmxapi_workflow")
    args = ap.parse_args(argv)
    cg, top, mapping = (str(Path(p).resolve()) for p in (args.cg, args.topology, args.mapping))
    # a shipped name stays a name (the backmap runs in --workdir: a relative path is made absolute first)
    model = args.model if not args.model or args.model in SHIPPED_MODELS else str(Path(args.model).resolve())
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=False)
    os.chdir(work)
    gmx = find_gmx()

    # 1. backmap (a gmxapi operation): conf, topology (wrapper with restraints), em_mdp, md_mdp
    bm = backmap_step(cg=cg, topology=top, mapping=mapping, model=model, workdir=work / "backmap",
                      gibbs=args.gibbs, steps_em=args.steps_em, md_ps=args.md_ps, temperature=args.temperature)

    # 2. energy minimisation, heavy atoms restrained to the backmapped positions
    grompp_em = gmxapi.commandline_operation(
        gmx, ["grompp"], input_files={"-f": bm.output.em_mdp, "-c": bm.output.conf, "-r": bm.output.reference,
                                      "-p": bm.output.topology},
        output_files={"-o": "em.tpr"})
    checked(grompp_em, "grompp (EM)")
    em = gmxapi.mdrun(gmxapi.read_tpr(grompp_em.output.file["-o"]), runtime_args={"-pin": "off"})
    em_conf = output_file(em.output.directory, "confout.gro")

    # 3. restrained MD from the minimised structure; the restraint reference stays the backmapped one
    grompp_md = gmxapi.commandline_operation(
        gmx, ["grompp"], input_files={"-f": bm.output.md_mdp, "-c": em_conf.output.path, "-r": bm.output.reference,
                                      "-p": bm.output.topology},
        output_files={"-o": "md.tpr"})
    checked(grompp_md, "grompp (MD)")
    md_input = gmxapi.modify_input(gmxapi.read_tpr(grompp_md.output.file["-o"]),
                                   parameters={"nsteps": int(round(args.md_ps / 0.001))})
    md = gmxapi.mdrun(md_input, runtime_args={"-pin": "off"})
    md.run()
    final = Path(md.output.directory.result()) / "confout.gro"
    print(f"backmapped: {bm.output.reference.result()}")
    print(f"minimised:  {em_conf.output.path.result()}")
    print(f"relaxed:    {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
