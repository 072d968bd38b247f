"""gmx_dbm relax: EM + restrained MD through real GROMACS/gmxapi, the gmx fallback, the gmxapi workflow
example, bad inputs (exit 2, work directory kept); without GROMACS: the wrapper topology (#ifdef blocks
evaluated, restraints on heavy atoms by element), run parameters, the .edr reader's errors. Runs are short
(<= 500 EM steps, <= 0.5 ps MD); tests that run GROMACS are marked ``gromacs``, those over ~30 s ``slow``."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gmx_dbm.cli import main
from gmx_dbm.io import AtomInfo, Frame, open_writer, read_frame, read_frames

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "topologies" / "sps.top"


def _gmxapi_ok() -> bool:
    from gmx_dbm.relax import import_gmxapi
    return import_gmxapi() is not None


@pytest.fixture(scope="module")
def backmapped(shared_data, tmp_path_factory) -> Path:
    """Frame 0 of the published deepBackmap output for the 568 K sPS set: a backmapped sPS frame."""
    out = tmp_path_factory.mktemp("relax_in") / "backmapped.gro"
    from gmx_dbm.topology import read_topology
    flat = read_topology(TOP).flat()
    fr = next(read_frames(shared_data / "sps" / "t568_train" / "deepbackmap.xtc", n_atoms=flat.n_atoms))
    with open_writer(out, AtomInfo.from_topology(flat)) as w:
        w.write(fr)
    return out


@pytest.fixture(scope="module")
def relaxed(gmx, shared_data, backmapped, tmp_path_factory):
    """One gmxapi relaxation of the backmapped frame with the shared topology (which includes a
    posres.itp that does not exist)."""
    if not _gmxapi_ok():
        pytest.skip("gmxapi (with its compiled extension) is not importable here; scripts/install_gromacs.sh")
    from gmx_dbm.relax import RelaxOptions, relax
    tmp = tmp_path_factory.mktemp("relax_run")
    top = shared_data / "sps" / "topol.top"
    itp = shared_data / "sps" / "topol_PS1.itp"
    before = (top.read_bytes(), itp.read_bytes())
    summary = relax(backmapped, top, tmp / "relaxed.gro",
                    RelaxOptions(steps_em=500, md_ps=0.5, temperature=300.0, engine="gmxapi"),
                    workdir=tmp / "work")
    return summary, tmp, before, (top.read_bytes(), itp.read_bytes())


@pytest.mark.gromacs
def test_relax_backmapped_frame_gmxapi(relaxed, backmapped):
    summary, tmp, before, after = relaxed
    assert summary["engine"] == "gmxapi"
    assert before == after, "the user's topology must not be modified"
    res = summary["frames"][0]
    # minimisation converges (Fmax < emtol) within the step budget
    assert res["em"]["converged"], res["em"]
    assert res["em"]["steps"] <= 500
    # MD finished, no constraint warnings anywhere in its logs
    md_dir = Path(res["md"]["log"]).parent
    assert (md_dir / "confout.gro").is_file()
    assert res["md"]["constraint_warnings"] == 0
    # EM and MD energies come from the .edr files gmxapi's mdrun wrote
    assert res["em"]["epot"] is not None and res["md"]["epot"] is not None
    assert (md_dir / "ener.edr").is_file()
    for f in list(Path(res["workdir"]).rglob("md.log")) + list(Path(res["workdir"]).rglob("mdrun.out")):
        assert "LINCS WARNING" not in f.read_text(), f
    # heavy atoms stay near the restraint reference (the backmapped positions)
    assert res["restrained_rms_nm"] < 0.05
    out = read_frame(tmp / "relaxed.gro")
    start = read_frame(backmapped)
    assert out.n_atoms == start.n_atoms == 5832
    # work directory kept: wrapper topology, restraints, placeholder for the missing posres.itp, logs
    wd = Path(summary["workdir"])
    assert (wd / "topol.top").is_file() and (wd / "posre_gmx_dbm_PS1.itp").is_file()
    assert (wd / "include" / "posres.itp").is_file()
    assert "-DGMX_DBM_POSRES" in (wd / "md.mdp").read_text()


@pytest.mark.gromacs
def test_fallback_without_gmxapi(gmx, backmapped, tmp_path):
    """gmxapi hidden (a sitecustomize makes `import gmxapi` fail): the gmx command line runs, with a notice."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gmxapi' or name.startswith('gmxapi.'):\n"
        "            raise ImportError('gmxapi hidden for this test')\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hide), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-m", "gmx_dbm", "relax", "-c", str(backmapped), "-p", str(TOP),
                           "-o", str(tmp_path / "out.gro"), "--steps-em", "300", "--md-ps", "0.1",
                           "--workdir", str(tmp_path / "work")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "gmxapi is not importable" in proc.stderr
    assert "engine gmx," in proc.stderr
    assert read_frame(tmp_path / "out.gro").n_atoms == 5832
    assert list((tmp_path / "work").rglob("md.log"))


def _require_shipped_sps_model() -> Path:
    """The model `gmx_dbm backmap` picks by default for topologies/sps.top: gmx_dbm/data/models/sps.safetensors
    (package data, in a fresh clone too; runs/ is not)."""
    from gmx_dbm.backmap import shipped_model_path
    path = shipped_model_path("sps")
    if not path.is_file():
        pytest.skip(f"the shipped sPS model is not installed ({path} missing): the package data "
                    "gmx_dbm/data/models/sps.safetensors is needed to backmap without --model")
    return path


def _small_sps(tmp_path):
    """2 of the 36 sPS chains in the example frame's box (324 atoms): the backmap inside the workflow
    example then takes seconds, not minutes."""
    top = (ROOT / "topologies" / "sps.top").read_text()
    top = top.replace('#include "mp_ps.ff/forcefield.itp"', f'#include "{ROOT / "topologies" / "mp_ps.ff" / "forcefield.itp"}"')
    top = top.replace('#include "sps.itp"', f'#include "{ROOT / "topologies" / "sps.itp"}"')
    top = top.replace("PS1  36", "PS1  2")
    assert "PS1  2" in top
    (tmp_path / "small.top").write_text(top)
    fr = read_frame(ROOT / "examples" / "sps" / "cg.gro")
    nb = 40
    atoms = AtomInfo(fr.atoms.names[:nb], fr.atoms.resnames[:nb], fr.atoms.resids[:nb])
    with open_writer(tmp_path / "small_cg.gro", atoms) as w:
        w.write(Frame(fr.positions[:nb], fr.box))
    return tmp_path / "small_cg.gro", tmp_path / "small.top"


@pytest.mark.gromacs
@pytest.mark.slow
def test_workflow_example(gmx, tmp_path):
    if not _gmxapi_ok():
        pytest.skip("gmxapi (with its compiled extension) is not importable here")
    _require_shipped_sps_model()
    cg, top = _small_sps(tmp_path)
    # no --model: the example backmaps with the shipped model that fits (sps)
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "gmxapi_workflow.py"), "--cg", str(cg),
                           "--topology", str(top), "--gibbs", "1", "--steps-em", "300", "--md-ps", "0.2",
                           "--workdir", str(tmp_path / "wf")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    final = proc.stdout.strip().splitlines()[-1].split(":", 1)[1].strip()
    assert Path(final).is_file() and read_frame(final).n_atoms == 324
    assert (tmp_path / "wf" / "backmap" / "posre_gmx_dbm_PS1.itp").is_file()


@pytest.mark.gromacs
@pytest.mark.slow
def test_backmap_relax_command(gmx, tmp_path):
    """`gmx_dbm backmap ... --relax` end to end (small system, the shipped sps model picked by default since
    --model is not given, either engine)."""
    _require_shipped_sps_model()
    cg, top = _small_sps(tmp_path)
    code = main(["backmap", "-c", str(cg), "-p", str(top), "-m", str(ROOT / "mappings" / "sps.map"),
                 "--gibbs", "1", "-o", str(tmp_path / "out.gro"), "--relax", "--steps-em", "300", "--md-ps", "0.1",
                 "--workdir", str(tmp_path / "work")])
    assert code == 0
    assert read_frame(tmp_path / "out.gro").n_atoms == 324
    assert (tmp_path / "work" / "backmapped.gro").is_file()
    assert list((tmp_path / "work" / "relax").rglob("md.log"))


# ------------------------------------------------------------------------------------ bad inputs
def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("gmx_dbm relax: error:")]
    return code, lines


@pytest.mark.gromacs
def test_topology_grompp_rejects(gmx, backmapped, tmp_path, capsys):
    """A non-integer net charge: grompp warns, -maxwarn 0 makes it an error."""
    src = (ROOT / "topologies" / "sps.itp").read_text().splitlines()
    k = next(i for i, ln in enumerate(src) if ln.strip().startswith("[ atoms ]"))
    j = next(i for i in range(k + 1, len(src)) if src[i].strip() and not src[i].lstrip().startswith(";"))
    words = src[j].split()
    words[6] = f"{float(words[6]) + 0.3:.4f}"
    src[j] = "  ".join(words)
    (tmp_path / "sps.itp").write_text("\n".join(src) + "\n")
    (tmp_path / "sps.top").write_text((ROOT / "topologies" / "sps.top").read_text().replace(
        '#include "mp_ps.ff/forcefield.itp"', f'#include "{ROOT / "topologies" / "mp_ps.ff" / "forcefield.itp"}"'))
    code, lines = _run(["relax", "-c", str(backmapped), "-p", str(tmp_path / "sps.top"), "-o",
                        str(tmp_path / "out.gro"), "--steps-em", "10", "--md-ps", "0", "--workdir",
                        str(tmp_path / "work")], capsys)
    assert code == 2
    assert len(lines) == 1 and "grompp" in lines[0] and "charge" in lines[0].lower(), lines
    assert "work directory kept" in lines[0]
    assert (tmp_path / "work" / "topol.top").is_file()
    assert not (tmp_path / "out.gro").exists()


@pytest.mark.gromacs
def test_box_too_small(gmx, backmapped, tmp_path, capsys):
    fr = read_frame(backmapped)
    small = tmp_path / "small.gro"
    with open_writer(small, fr.atoms) as w:
        w.write(Frame(fr.positions, np.diag([1.8, 1.8, 1.8])))
    code, lines = _run(["relax", "-c", str(small), "-p", str(TOP), "-o", str(tmp_path / "out.gro"),
                        "--steps-em", "10", "--md-ps", "0", "--workdir", str(tmp_path / "work")], capsys)
    assert code == 2
    assert len(lines) == 1 and "cut-off" in lines[0].lower() and "box" in lines[0].lower(), lines
    assert "work directory kept" in lines[0]
    assert (tmp_path / "work").is_dir() and list((tmp_path / "work").rglob("*.mdp"))


def test_missing_gromacs(backmapped, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GMX_DBM_GMX", str(tmp_path / "no_such_gmx"))
    code, lines = _run(["relax", "-c", str(backmapped), "-p", str(TOP), "-o", str(tmp_path / "out.gro"),
                        "--workdir", str(tmp_path / "work")], capsys)
    assert code == 2
    assert len(lines) == 1 and "GMX_DBM_GMX" in lines[0], lines


def test_missing_include_is_a_clear_error(backmapped, tmp_path, capsys):
    (tmp_path / "bad.top").write_text('#include "nowhere.itp"\n[ system ]\nx\n[ molecules ]\n')
    code, lines = _run(["relax", "-c", str(backmapped), "-p", str(tmp_path / "bad.top"), "-o",
                        str(tmp_path / "out.gro"), "--workdir", str(tmp_path / "work")], capsys)
    assert code == 2
    assert len(lines) == 1 and "nowhere.itp" in lines[0] and "bad.top:1" in lines[0], lines


# ------------------------------------------------------------------------------------ no GROMACS run
def test_wrapper_topology_and_user_mdp(tmp_path):
    """Several moleculetypes in one include file: a rewritten copy gets a restraint include after each;
    one-moleculetype files are included as they are; user mdp entries override generated ones."""
    from gmx_dbm.relax import RelaxOptions, make_mdp, prepare_topology
    ff = (ROOT / "topologies" / "mp_ps.ff" / "forcefield.itp").resolve()
    mol = ("[ moleculetype ]\n{n} 3\n[ atoms ]\n1 C 1 R C1 1 0.0 12.011\n2 H 1 R H1 1 0.0 1.008\n"
           "[ bonds ]\n1 2 1 0.11 10000\n")
    (tmp_path / "two.itp").write_text(mol.format(n="A") + mol.format(n="B"))
    (tmp_path / "one.itp").write_text(mol.format(n="C"))
    (tmp_path / "sys.top").write_text(f'#include "{ff}"\n#include "two.itp"\n#include "one.itp"\n'
                                      "[ system ]\nt\n[ molecules ]\nA 1\nB 2\nC 1\n")
    (tmp_path / "user.mdp").write_text("epsilon_rf = 2.5\nintegrator = sd\nnsteps = 7\ndefine = -DFOO\n")
    prep = prepare_topology(tmp_path / "sys.top", tmp_path / "work", "heavy", 500.0)
    top = (tmp_path / "work" / "topol.top").read_text()
    assert f'#include "{(tmp_path / "one.itp").resolve()}"' in top
    assert top.index('posre_gmx_dbm_C.itp') > top.index("one.itp")
    copy = next((tmp_path / "work" / "topology").glob("*two.itp")).read_text()
    assert copy.index("posre_gmx_dbm_A.itp") < copy.index("B 3") < copy.index("posre_gmx_dbm_B.itp")
    assert (tmp_path / "work" / "posre_gmx_dbm_A.itp").read_text().count("  500") == 3  # heavy atom 1 only
    assert list(prep.restrained) == [0, 2, 4, 6]
    from gmx_dbm.io.mdp import read_mdp
    user = read_mdp(tmp_path / "user.mdp")
    md, n = make_mdp("md", RelaxOptions(md_ps=1.0), prep, user)
    em, _ = make_mdp("em", RelaxOptions(), prep, user)
    assert "epsilon-rf = 2.5" in " ".join(md.split())
    assert "integrator = sd" in " ".join(md.split()) and "integrator = steep" in " ".join(em.split())
    assert n == 1000 and "nsteps = 1000" in " ".join(md.split())
    assert "-DFOO" in md and "-DGMX_DBM_POSRES" in md
    assert md.count("epsilon-rf") == 1  # replaced, not duplicated


FF = (ROOT / "topologies" / "mp_ps.ff" / "forcefield.itp").resolve()
MOL = ("[ moleculetype ]\n{n} 3\n[ atoms ]\n1 C 1 R C1 1 0.0 12.011\n2 H 1 R H1 1 0.0 1.008\n"
       "[ bonds ]\n1 2 1 0.11 10000\n")


def test_missing_include_in_inactive_block_is_not_followed(tmp_path):
    """An #include inside #ifdef FLEXIBLE is read only with FLEXIBLE defined (as grompp -DFLEXIBLE would):
    absent, it is no error; defined, its absence names the including file and line."""
    from gmx_dbm.errors import TopologyError
    from gmx_dbm.relax import prepare_topology
    (tmp_path / "sys.top").write_text(f'#include "{FF}"\n' + MOL.format(n="A") +
                                      '#ifdef FLEXIBLE\n#include "missing.itp"\n#endif\n'
                                      "[ system ]\nt\n[ molecules ]\nA 2\n")
    prep = prepare_topology(tmp_path / "sys.top", tmp_path / "work")
    top = (tmp_path / "work" / "topol.top").read_text()
    assert '#ifdef FLEXIBLE\n#include "missing.itp"\n#endif' in top   # grompp skips it as well
    assert list(prep.restrained) == [0, 2]
    assert not (tmp_path / "work" / "include" / "missing.itp").exists()
    with pytest.raises(TopologyError, match=r"sys.top:10: #include file 'missing.itp' not found") as exc:
        prepare_topology(tmp_path / "sys.top", tmp_path / "work2", defines=["FLEXIBLE"])
    assert exc.value.line == 10 and exc.value.path == str((tmp_path / "sys.top").resolve())


def test_defines_in_files_and_else_branches_decide_what_is_read(tmp_path):
    """#define/#undef in the topology count like -D; #ifndef/#else pick the branch; a moleculetype file
    behind an include guard is still rewritten with a restraint include after each of its moleculetypes."""
    from gmx_dbm.relax import prepare_topology
    (tmp_path / "one.itp").write_text(MOL.format(n="C"))
    (tmp_path / "two.itp").write_text("#ifndef TWO_ITP\n#define TWO_ITP\n" + MOL.format(n="A") + MOL.format(n="B")
                                      + "#endif\n")
    (tmp_path / "sys.top").write_text(
        f'#include "{FF}"\n#define USE_ONE\n#define DROPPED\n#undef DROPPED\n'
        '#ifndef USE_ONE\n#include "absent_a.itp"\n#else\n#include "one.itp"\n#endif\n'
        '#ifdef DROPPED\n#include "absent_b.itp"\n#endif\n'
        '#include "two.itp"\n#include "two.itp"\n'
        "[ system ]\nt\n[ molecules ]\nC 1\nA 1\nB 1\n")
    prep = prepare_topology(tmp_path / "sys.top", tmp_path / "work", "heavy", 500.0)
    top = (tmp_path / "work" / "topol.top").read_text()
    assert f'#include "{(tmp_path / "one.itp").resolve()}"' in top
    assert top.index("posre_gmx_dbm_C.itp") > top.index("one.itp")
    copy = next((tmp_path / "work" / "topology").glob("*two.itp")).read_text()
    assert copy.index("posre_gmx_dbm_A.itp") < copy.index("B 3") < copy.index("posre_gmx_dbm_B.itp")
    assert list(prep.restrained) == [0, 2, 4]


@pytest.mark.parametrize("text, line, what", [
    ("#endif\n", 2, "#endif without an open #ifdef"),
    ("#else\n", 2, "#else without an open #ifdef"),
    ("#ifdef X\n[ system ]\n", 2, "#ifdef/#ifndef without a matching #endif"),
    ("#ifdef\n#endif\n", 2, "#ifdef without a name"),
])
def test_unbalanced_conditionals_name_file_and_line(tmp_path, text, line, what):
    from gmx_dbm.errors import TopologyError
    from gmx_dbm.relax import prepare_topology
    (tmp_path / "sys.top").write_text(f'#include "{FF}"\n' + text)
    with pytest.raises(TopologyError, match=rf"sys.top:{line}: {what}"):
        prepare_topology(tmp_path / "sys.top", tmp_path / "work")


def test_user_mdp_define_is_a_topology_define(tmp_path):
    from gmx_dbm.io.mdp import read_mdp
    from gmx_dbm.relax import mdp_defines
    (tmp_path / "u.mdp").write_text("define = -DFLEXIBLE -DFC=10 -I/somewhere\n")
    assert mdp_defines(read_mdp(tmp_path / "u.mdp")) == ["FLEXIBLE", "FC=10"]
    assert mdp_defines(None) == []


def _hmr_octane(tmp_path, molecules: int = 2, extra: str = "") -> Path:
    """topologies/octane.top with hydrogen-mass repartitioning: each hydrogen 3.024 u, its carbon lighter by
    the 2.016 u moved, and ``molecules`` molecules; ``extra``: lines after the includes."""
    lines = (ROOT / "topologies" / "octane.itp").read_text().splitlines()
    section, atoms, bonds = None, {}, []
    for k, ln in enumerate(lines):
        words = ln.split(";", 1)[0].split()
        if ln.strip().startswith("["):
            section = ln.strip("[] ").strip()
        elif words and section == "atoms":
            atoms[int(words[0])] = k
        elif words and section == "bonds":
            bonds.append((int(words[0]), int(words[1])))
    name = {i: lines[k].split()[4] for i, k in atoms.items()}
    mass = {i: float(lines[k].split()[7]) for i, k in atoms.items()}
    for a, b in bonds:
        for h, c in ((a, b), (b, a)):
            if name[h].startswith("H") and name[c].startswith("C"):
                mass[h], mass[c] = 3.024, mass[c] - 2.016
    for i, k in atoms.items():
        words = lines[k].split()
        words[7] = f"{mass[i]:.3f}"
        lines[k] = "  ".join(words)
    (tmp_path / "octane_hmr.itp").write_text("\n".join(lines) + "\n")
    (tmp_path / "octane_hmr.top").write_text(
        f'#include "{FF}"\n#include "octane_hmr.itp"\n{extra}[ system ]\nHMR octane\n[ molecules ]\nL49C {molecules}\n')
    return tmp_path / "octane_hmr.top"


def test_heavy_atoms_by_element_with_hydrogen_mass_repartitioning(tmp_path):
    """Restraints go on the carbons exactly: hydrogens of 3.024 u stay hydrogens, lighter carbons stay heavy."""
    from gmx_dbm.relax import prepare_topology
    top = _hmr_octane(tmp_path)
    prep = prepare_topology(top, tmp_path / "work", "heavy", 1000.0)
    flat = prep.flat
    assert np.allclose(flat.masses[np.char.startswith(flat.names.astype(str), "H")], 3.024)
    assert flat.masses[np.char.startswith(flat.names.astype(str), "C")].min() < 7.0
    carbons = np.nonzero(np.char.startswith(flat.names.astype(str), "C"))[0]
    assert len(carbons) == 16
    assert list(prep.restrained) == list(carbons)
    assert list(prep.heavy) == list(carbons)
    assert list(np.nonzero(flat.is_heavy)[0]) == list(carbons)
    rows = [ln.split() for ln in (tmp_path / "work" / "posre_gmx_dbm_L49C.itp").read_text().splitlines()
            if ln.strip() and ln.split()[0].isdigit()]
    assert [int(r[0]) - 1 for r in rows] == list(carbons[:8])


# ------------------------------------------------------------------------------------ results from the .edr
def _log_value(text: str, pattern: str) -> float:
    import re
    m = re.search(pattern, text)
    assert m, pattern
    return float(m.group(1))


def _log_averages_potential(text: str) -> float:
    """The Potential of the averages block at the end of an md.log (fixed 15-character columns)."""
    block = text[text.rindex("A V E R A G E S"):]
    lines = block[block.index("Energies (kJ/mol)"):].splitlines()[1:]
    for names, values in zip(lines[::2], lines[1::2]):
        for c in range(0, len(names), 15):
            if names[c:c + 15].strip() == "Potential":
                return float(values[c:c + 15])
    raise AssertionError("no Potential in the averages block")


@pytest.fixture(scope="module")
def octane_relaxed(gmx, shared_data, tmp_path_factory):
    """12 molecules of a shared octane frame with the hydrogen-mass-repartitioned octane topology, through
    50 EM steps and 0.2 ps restrained MD on the gmx command line. The topology includes a file that does
    not exist inside an inactive #ifdef block: grompp, like the wrapper, skips it."""
    from gmx_dbm.relax import Relaxer, RelaxOptions
    tmp = tmp_path_factory.mktemp("octane_relax")
    top = _hmr_octane(tmp, molecules=12, extra='#ifdef FLEXIBLE\n#include "missing_flexible.itp"\n#endif\n')
    fr = read_frame(shared_data / "octane" / "octane_t350_1" / "aa" / "300.gro")
    n = 12 * 26
    frame = Frame(fr.positions[:n], fr.box)
    relaxer = Relaxer(top, tmp / "work", RelaxOptions(steps_em=50, md_ps=0.2, engine="gmx", threads=1))
    return relaxer, relaxer.frame(frame, 0), gmx


@pytest.mark.gromacs
def test_stage_energies_come_from_the_edr(octane_relaxed):
    from gmx_dbm.gromacs import edr_energies
    relaxer, res, _ = octane_relaxed
    em, md = res.em, res.md
    # EM: the last .edr frame is the lowest energy reached, the one the log's convergence message reports
    em_terms = edr_energies(em.edr)
    assert em.epot == pytest.approx(float(em_terms["Potential"][-1]), rel=1e-12)
    assert em.energies["Potential"] == em.epot and "LJ (SR)" in em.energies
    em_log = Path(em.log).read_text()
    assert em.epot == pytest.approx(_log_value(em_log, r"Potential Energy\s+=\s+(\S+)"), rel=1e-5)
    assert em.fmax == _log_value(em_log, r"Maximum force\s+=\s+(\S+)")
    assert 0 < em.steps <= 50 and isinstance(em.converged, bool)
    # MD: averages over the .edr frames (steps 0, 100, 200), as the log's averages block
    md_terms = edr_energies(md.edr)
    assert len(md_terms["Potential"]) == 3
    assert md.epot == pytest.approx(float(np.mean(md_terms["Potential"])), rel=1e-12)
    assert md.epot == pytest.approx(_log_averages_potential(Path(md.log).read_text()), rel=1e-5, abs=1e-3)
    assert md.energies["Position Rest."] > 0     # the carbons are restrained
    assert md.constraint_warnings == 0
    assert len(relaxer.prepared.restrained) == 12 * 8


@pytest.mark.gromacs
def test_edr_reader_agrees_with_gmx_energy(octane_relaxed, tmp_path):
    """edr_energies (pyedr) against `gmx energy` on the same file: same frames, same values."""
    from gmx_dbm.gromacs import edr_energies, run_gmx
    _, res, gmx = octane_relaxed
    terms = edr_energies(res.md.edr)
    run_gmx(["energy", "-f", res.md.edr, "-o", tmp_path / "e.xvg"], cwd=tmp_path,
            input_text="Potential\nPosition-Rest.\nTemperature\n\n", gmx=gmx)
    text = (tmp_path / "e.xvg").read_text().splitlines()
    legends = [ln.split('"')[1] for ln in text if ln.startswith("@ s") and " legend " in ln]
    rows = np.array([[float(v) for v in ln.split()] for ln in text if ln and ln[0] not in "#@"])
    assert rows.shape == (3, 4) and sorted(legends) == ["Position Rest.", "Potential", "Temperature"]
    for k, name in enumerate(legends, 1):   # gmx energy writes the terms in file order
        assert np.allclose(terms[name], rows[:, k], rtol=1e-5, atol=1e-3), name
    assert "Time" not in terms and all(len(v) == 3 for v in terms.values())


def test_edr_reader_errors(tmp_path):
    from gmx_dbm.errors import GromacsError
    from gmx_dbm.gromacs import edr_energies
    with pytest.raises(GromacsError, match="not found"):
        edr_energies(tmp_path / "none.edr")
    (tmp_path / "bad.edr").write_bytes(b"not an energy file at all")
    with pytest.raises(GromacsError, match="not a GROMACS .4.0 or later. .edr file"):
        edr_energies(tmp_path / "bad.edr")
    # the right start, then garbage
    (tmp_path / "cut.edr").write_bytes(struct.pack(">i", -55555) + b"garbage after the magic number")
    with pytest.raises(GromacsError, match="cannot read energy file"):
        edr_energies(tmp_path / "cut.edr")


def _imports(path: Path) -> set:
    """Absolute names of the gmx_dbm modules a source file imports (relative imports resolved)."""
    import ast
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        pkg += ".__init__"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[:-node.level] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_dependencies_point_one_way():
    """gmx_dbm.relax never imports the backmap pipeline or the workflow; the two command modules share
    their relaxation options through a helper instead of importing each other."""
    for path in (ROOT / "gmx_dbm" / "relax").glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("gmx_dbm.backmap", "gmx_dbm.workflow", "gmx_dbm.commands"))}
        assert not bad, (path.name, bad)
    relax_cmd = _imports(ROOT / "gmx_dbm" / "commands" / "relax.py")
    backmap_cmd = _imports(ROOT / "gmx_dbm" / "commands" / "backmap.py")
    assert not any(m.startswith("gmx_dbm.commands.backmap") for m in relax_cmd)
    assert not any(m.startswith("gmx_dbm.commands.relax") for m in backmap_cmd)
    assert not any(m.startswith("gmx_dbm.backmap") for m in relax_cmd)
