#!/usr/bin/env python3
"""Write the small sPS reference of the tests, tests/data/sps3/, with gmx_dbm itself.

Three chains of the shipped CG example (examples/sps/cg.gro, chains 1-3, the example's box) are backmapped
with the shipped ``sps`` model at 568 K (seed 1), relaxed in GROMACS (``gmx_dbm relax``: energy
minimisation, then 10 ps of restrained MD at 568 K with all bonds constrained) and mapped back to CG.
Writes sps3.top (includes the project's force field and sPS moleculetype), aa.gro, cg.gro. Needs
GROMACS (scripts/install_gromacs.sh). Run from the repository root:

    .venv/bin/python scripts/make_test_reference.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "sps3"
CHAINS = 3
BEADS_PER_CHAIN = 20


def run(*argv):
    subprocess.run([sys.executable, "-m", "gmx_dbm", "-q", *argv], check=True, cwd=ROOT)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sps3.top").write_text(
        "; three chains of syndiotactic 10-mer polystyrene in the box of examples/sps/cg.gro\n"
        '#include "../../../topologies/mp_ps.ff/forcefield.itp"\n'
        '#include "../../../topologies/sps.itp"\n\n'
        "[ system ]\nsPS: 3 chains (tests/data/sps3, made by scripts/make_test_reference.py)\n\n"
        f"[ molecules ]\nPS1  {CHAINS}\n")
    lines = (ROOT / "examples" / "sps" / "cg.gro").read_text().splitlines()
    n = CHAINS * BEADS_PER_CHAIN
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cg_in = tmp / "cg_in.gro"
        cg_in.write_text("\n".join(["sPS CG, 3 chains of examples/sps/cg.gro", f"{n:5d}", *lines[2:2 + n],
                                    lines[-1]]) + "\n")
        top = str(OUT / "sps3.top")
        run("backmap", "-c", str(cg_in), "-p", top, "-m", "mappings/sps.map", "-o", str(tmp / "bm.gro"),
            "--temperature", "568", "--seed", "1")
        run("relax", "-c", str(tmp / "bm.gro"), "-p", top, "-o", str(OUT / "aa.gro"), "--temperature", "568",
            "--md-ps", "10", "--md-constraints", "all-bonds", "--engine", "gmx", "--workdir", str(tmp / "relax"))
    run("map", "-f", str(OUT / "aa.gro"), "-p", str(OUT / "sps3.top"), "-m", "mappings/sps.map",
        "-o", str(OUT / "cg.gro"))
    for p in OUT.glob("#*#"):
        p.unlink()
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
