"""The shipped topologies: identical to the sPS reference where they must be, matching atom names and order
of the shared frames, and runnable by GROMACS (grompp + 50 MD steps)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gmx_dbm.gromacs import run_gmx
from gmx_dbm.io import read_frame
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "topologies"
CASES = {"sps": "sps/aa.gro", "octane": "octane/octane_t350_10/aa/350.gro",
         "cumene": "cumene/cumene_t350_6/aa/400.gro"}

MD_MDP = """integrator = md
dt = 0.001
nsteps = 50
cutoff-scheme = Verlet
rvdw = 1.0
rcoulomb = 1.0
coulombtype = reaction-field
epsilon-rf = 2.5
DispCorr = no
tcoupl = v-rescale
tc-grps = System
tau-t = 0.1
ref-t = 350
gen-vel = yes
gen-temp = 350
gen-seed = 1
constraints = none
nstenergy = 10
"""


def test_generator_reproduces_committed_files(tmp_path):
    copy = tmp_path / "topologies"
    shutil.copytree(TOP, copy, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, str(copy / "make_topologies.py")], check=True)
    for f in TOP.rglob("*.itp"):
        assert (copy / f.relative_to(TOP)).read_text() == f.read_text(), f
    for f in TOP.glob("*.top"):
        assert (copy / f.name).read_text() == f.read_text(), f


def test_sps_identical_to_reference(shared_data, tmp_path):
    for n in ("topol.top", "topol_PS1.itp"):
        shutil.copy(shared_data / "sps" / n, tmp_path / n)
    (tmp_path / "posres.itp").write_text("")
    ref = read_topology(tmp_path / "topol.top")
    ours = read_topology(TOP / "sps.top")
    a, b = ref.moleculetypes["PS1"], ours.moleculetypes["PS1"]
    assert ours.molecules == ref.molecules == [("PS1", 36)]
    for key in ("name", "type", "charge", "mass", "resid", "resname"):
        assert a.atom_attr(key) == b.atom_attr(key), key

    def canon(inter, func=None, oriented=False):
        return sorted((x.atoms if oriented else min(x.atoms, x.atoms[::-1]), x.params)
                      for x in inter if func is None or x.func == func)
    for kind in ("bonds", "angles"):
        assert canon(a.interactions[kind]) == canon(b.interactions[kind]), kind
    assert canon(a.interactions["dihedrals"], 1) == canon(b.interactions["dihedrals"], 1)
    assert canon(a.interactions["dihedrals"], 2, True) == canon(b.interactions["dihedrals"], 2, True)
    assert a.excluded_pairs() == b.excluded_pairs()
    for key in ("c6", "c12"):
        assert {n: getattr(t, key) for n, t in ref.atomtypes.items()} == \
            pytest.approx({n: getattr(t, key) for n, t in ours.atomtypes.items()})


@pytest.mark.parametrize("name", sorted(CASES))
def test_atom_names_match_shared_frames(shared_data, name):
    system = read_topology(TOP / f"{name}.top")
    frame = read_frame(shared_data / CASES[name])
    flat = system.flat()
    assert frame.n_atoms == system.n_atoms
    assert list(frame.atoms.names) == list(flat.names)
    assert list(frame.atoms.resnames) == list(flat.resnames)


@pytest.mark.gromacs
@pytest.mark.parametrize("name", sorted(CASES))
def test_grompp_and_short_md(gmx, shared_data, tmp_path, name):
    (tmp_path / "md.mdp").write_text(MD_MDP)
    run_gmx(["grompp", "-f", "md.mdp", "-c", shared_data / CASES[name], "-p", TOP / f"{name}.top", "-o", "md.tpr"],
            cwd=tmp_path, gmx=gmx)
    run_gmx(["mdrun", "-s", "md.tpr", "-deffnm", "md", "-nt", "2", "-pin", "off"], cwd=tmp_path, gmx=gmx)
    out = (tmp_path / "md.gro").read_text().splitlines()
    assert int(out[1]) == read_topology(TOP / f"{name}.top").n_atoms
    assert "nan" not in (tmp_path / "md.gro").read_text().lower()
