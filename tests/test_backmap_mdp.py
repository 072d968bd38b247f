"""`gmx_dbm backmap -f AA.mdp`: the user's GROMACS run parameters set constraints, temperature and the
non-bonded settings of the thermalisation; explicit options win; what backmap cannot use is refused at
its line. On the toy system with a tiny toy model (trained once per module, ~2 s)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from toy import build_toy_model  # tests/toy.py

from gmx_dbm.backmap import Backmapper, RunParameters, backmap
from gmx_dbm.backmap import steps as S
from gmx_dbm.cli import main
from gmx_dbm.errors import ConfigError
from gmx_dbm.ff.forcefield import NonbondedSettings
from gmx_dbm.geometry import minimum_image
from gmx_dbm.io import read_frame
from gmx_dbm.mapping import read_mapping
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

# the toy box is 2 nm wide: 0.8 nm + the thermalisation's 0.1 nm skin fit in half of it
USER_MDP = """\
; the user's run parameters
integrator   = md
constraints  = all-bonds
tc-grps      = System
ref_t        = 568
coulombtype  = Reaction-Field
epsilon_rf   = 2.5
rvdw         = 0.8
rcoulomb     = 0.8
"""


def write(tmp_path, text, name="md.mdp") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    built = build_toy_model(tmp_path_factory.mktemp("toy_model"))
    system = read_topology(DATA / "toy.top")
    built["system"] = system
    built["mapping"] = read_mapping([DATA / "toy.map"], system)
    return built


def build(toy, **kw):
    kw.setdefault("md_steps", 5)
    return Backmapper.build(toy["system"], toy["mapping"], toy["model"], **kw)


def backmap_argv(toy, out, *extra):
    return ["-q", "backmap", "-c", str(toy["cg"]), "-p", str(DATA / "toy.top"), "-m", str(DATA / "toy.map"),
            "-o", str(out), "--model", str(toy["model"]), "--gibbs", "0", "--threads", "1", "--no-quality", *extra]


def test_mdp_constraints_temperature_and_cutoffs_reach_the_backmapper(toy, tmp_path):
    mdp = write(tmp_path, USER_MDP)
    bm = build(toy, mdp=mdp)
    assert bm.constraints == "all-bonds" and bm.temperature == 568.0
    assert bm.settings.sources["constraints"] == "md.mdp:3"
    assert bm.settings.sources["temperature"] == "md.mdp:5"
    assert bm.settings.temperature_note is None      # the temperature is the user's, not the card's
    assert any(isinstance(s, S.ProjectBonds) for s in bm.steps)
    # the thermalisation runs in the mdp's force field, the candidate energies use its rvdw
    expected = NonbondedSettings(cutoff=0.8, rcoulomb=0.8, epsilon_rf=2.5)
    assert bm.settings.forcefield == expected and bm.dynamics.ff.settings == expected
    assert bm.dynamics.cutoff == pytest.approx(0.8)
    assert bm.settings.prior_lj_cutoff == pytest.approx(0.8)
    assert bm.dynamics.bonds is not None and len(bm.dynamics.bonds) == 12   # 6 bonds x 2 molecules
    # without an mdp: the model card's constraints and the thermalisation's own 0.7 nm cut-off
    plain = build(toy)
    assert plain.settings.sources["constraints"] == "the model card"
    assert plain.settings.forcefield is None and plain.dynamics.cutoff == pytest.approx(0.7)


def test_explicit_options_win_over_the_mdp(toy, tmp_path):
    mdp = write(tmp_path, USER_MDP)
    bm = build(toy, mdp=mdp, constraints="none", temperature=400.0)
    assert bm.constraints == "none" and bm.temperature == 400.0
    assert not any(isinstance(s, S.ProjectBonds) for s in bm.steps)
    assert bm.settings.sources["constraints"] == \
        "set explicitly (--constraints), over md.mdp:3 constraints = all-bonds"
    assert bm.settings.sources["temperature"] == "set explicitly (--temperature), over md.mdp:5 ref-t = 568"
    # the non-bonded settings have no option of their own: still the mdp's
    assert bm.dynamics.ff.settings.epsilon_rf == 2.5


def test_cli_backmap_with_mdp_constrains_bonds_and_logs_where_values_came_from(toy, tmp_path, caplog):
    mdp = write(tmp_path, USER_MDP)
    out = tmp_path / "aa.gro"
    with caplog.at_level(logging.INFO, logger="gmx_dbm"):
        assert main(backmap_argv(toy, out, "-f", str(mdp), "--md-steps", "5")) == 0
    text = caplog.text
    assert "constraints all-bonds (md.mdp:3)" in text and "at 568 K (md.mdp:5)" in text
    assert "from md.mdp: LJ cut-off 0.8 nm (potential-shift)" in text
    # every bond of the output at its topology length (all-bonds from the mdp; the toy card says none)
    flat = toy["system"].flat()
    fr = read_frame(out)
    idx, b0 = flat.bond_list()
    d = np.linalg.norm(minimum_image(fr.positions[idx[:, 1]] - fr.positions[idx[:, 0]], fr.box), axis=1)
    assert np.abs(d - b0).max() < 2e-3       # .gro precision
    # --temperature given: it wins, and the log says over which entry
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gmx_dbm"):
        assert main(backmap_argv(toy, out, "-f", str(mdp), "--md-steps", "0", "--temperature", "450")) == 0
    assert "at 450 K (set explicitly (--temperature), over md.mdp:5 ref-t = 568)" in caplog.text


def test_python_backmap_takes_mdp_and_reports_sources(toy, tmp_path):
    mdp = write(tmp_path, USER_MDP)
    s = backmap(toy["cg"], DATA / "toy.top", DATA / "toy.map", tmp_path / "aa.gro", model=toy["model"], gibbs=0,
                md_steps=0, progress=False, quality=False, mdp=mdp, constraints="h-bonds")
    assert s["constraints"] == "h-bonds" and s["temperature"] == 568.0
    assert s["sources"]["temperature"] == "md.mdp:5" and s["sources"]["forcefield"] == "md.mdp"
    assert s["sources"]["constraints"].startswith("set explicitly")


@pytest.mark.parametrize("value", ["h-angles", "all-angles", "H_Angles"])
def test_angle_constraints_are_refused_at_their_line_exit_2(toy, tmp_path, capsys, value):
    mdp = write(tmp_path, f"; angle constraints\nintegrator = md\nconstraints = {value}\n", "angles.mdp")
    out = tmp_path / "aa.gro"
    assert main(backmap_argv(toy, out, "-f", str(mdp))) == 2
    err = capsys.readouterr().err
    assert err.startswith("gmx_dbm backmap: error: ") and len(err.splitlines()) == 1, err
    assert f"{mdp}:3: constraints = {value} is not supported" in err
    assert "none, h-bonds or all-bonds" in err
    assert not out.exists()


def test_angle_constraints_in_the_mdp_are_not_read_when_constraints_are_given(toy, tmp_path):
    mdp = write(tmp_path, "constraints = h-angles\nref-t = 500\n")
    bm = build(toy, mdp=mdp, constraints="h-bonds")
    assert bm.constraints == "h-bonds" and bm.temperature == 500.0


def test_coupling_groups_at_different_temperatures_are_refused(toy, tmp_path, capsys):
    mdp = write(tmp_path, "tcoupl = v-rescale\ntc-grps = A B\ntau-t = 0.1 0.1\nref-t = 300 350\n", "groups.mdp")
    out = tmp_path / "aa.gro"
    assert main(backmap_argv(toy, out, "-f", str(mdp))) == 2
    err = capsys.readouterr().err
    assert f"{mdp}:4: ref-t gives the coupling groups different temperatures (A 300 K, B 350 K)" in err
    assert "--temperature" in err and not out.exists()
    # equal temperatures are one temperature; an explicit --temperature makes the entry irrelevant
    same = write(tmp_path, "tc-grps = A B\nref-t = 350 350\n", "same.mdp")
    assert build(toy, mdp=same).temperature == 350.0
    assert build(toy, mdp=mdp, temperature=320.0).temperature == 320.0


def test_run_parameters_follow_gromacs_spellings_and_defaults(tmp_path):
    p = RunParameters.read(write(tmp_path, "Constraints = H_Bonds\nref_t = 310\ncoulombtype = PME\n"))
    assert p.constraints() == ("h-bonds", "md.mdp:1")
    assert p.temperature() == (310.0, "md.mdp:2")
    # PME: the thermalisation's stand-in is a reaction field with epsilon-rf infinity at rcoulomb
    s = p.nonbonded()
    assert s.coulomb == "reaction-field" and s.epsilon_rf == 0.0 and s.rcoulomb == 1.0
    # no constraints entry: GROMACS' default (none); no ref-t: none given
    empty = RunParameters.read(write(tmp_path, "integrator = md\n", "empty.mdp"))
    assert empty.constraints()[0] == "none" and "GROMACS' default" in empty.constraints()[1]
    assert empty.temperature()[0] is None
    with pytest.raises(ConfigError, match=r"bad.mdp:1: constraints = rigid: not a GROMACS constraints value"):
        RunParameters.read(write(tmp_path, "constraints = rigid\n", "bad.mdp")).constraints()
    with pytest.raises(ConfigError, match=r"neg.mdp:1: ref-t must be positive"):
        RunParameters.read(write(tmp_path, "ref-t = -5\n", "neg.mdp")).temperature()


def test_no_ref_t_keeps_the_default_temperature(toy, tmp_path):
    """Without ref-t the temperature is found as without an mdp (the toy card has none: the fallback),
    with the notice to give it."""
    bm = build(toy, mdp=write(tmp_path, "constraints = h-bonds\n"))
    plain = build(toy)
    assert bm.temperature == plain.temperature == 300.0
    assert bm.settings.sources["temperature"] == plain.settings.sources["temperature"] == "the fallback"
    assert "ref-t in -f MDP" in bm.settings.temperature_note
    assert bm.constraints == "h-bonds"


def test_backmap_relax_takes_the_mdp_constraints_for_its_md(toy, tmp_path, monkeypatch):
    """--relax: the GROMACS MD constrains what -f MDP constrains unless --md-constraints is given; it
    runs at the backmap's temperature (here the mdp's ref-t). The GROMACS part is replaced by a stub."""
    import gmx_dbm.workflow as wf
    seen = []

    def fake_relax(conf, top, output, options, workdir=None, defines=None):
        seen.append((options.constraints, options.temperature, options.mdp))
        return {}
    monkeypatch.setattr(wf, "relax", fake_relax)
    mdp = write(tmp_path, USER_MDP)
    args = backmap_argv(toy, tmp_path / "relaxed.gro", "-f", str(mdp), "--md-steps", "0", "--relax",
                        "--workdir", str(tmp_path / "work"))
    assert main(args) == 0
    assert main(args + ["--md-constraints", "h-bonds"]) == 0
    assert main(backmap_argv(toy, tmp_path / "relaxed.gro", "--md-steps", "0", "--relax", "--temperature", "300",
                             "--workdir", str(tmp_path / "work"))) == 0
    assert seen == [("all-bonds", 568.0, None), ("h-bonds", 568.0, None), ("h-bonds", 300.0, None)]


def test_relax_mdp_of_backmap_is_its_own_option(toy, tmp_path, monkeypatch):
    """backmap's -f is the backmap's run parameters; the GROMACS user mdp of --relax is --relax-mdp, as
    `gmx_dbm relax -f` (both parse)."""
    import gmx_dbm.workflow as wf
    seen = []
    monkeypatch.setattr(wf, "relax", lambda conf, top, output, options, **kw: seen.append(options.mdp) or {})
    mdp = write(tmp_path, USER_MDP)
    grompp_mdp = write(tmp_path, "nstlog = 10\n", "grompp.mdp")
    assert main(backmap_argv(toy, tmp_path / "r.gro", "-f", str(mdp), "--relax-mdp", str(grompp_mdp),
                             "--md-steps", "0", "--relax", "--workdir", str(tmp_path / "work"))) == 0
    assert seen == [str(grompp_mdp)]
    from gmx_dbm.cli import build_parser
    relax_args = build_parser().parse_args(["relax", "-c", "a.gro", "-p", "a.top", "-o", "b.gro", "-f", "u.mdp"])
    from gmx_dbm.commands._relax_args import options_from_args
    assert options_from_args(relax_args).mdp == "u.mdp" and options_from_args(relax_args).constraints == "h-bonds"


def test_example_sps_mdp_is_what_the_example_needs():
    p = RunParameters.read(ROOT / "examples" / "sps" / "md.mdp")
    assert p.constraints()[0] == "all-bonds" and p.temperature()[0] == 568.0
    assert p.nonbonded() == NonbondedSettings(cutoff=1.0, rcoulomb=1.0, epsilon_rf=2.5)


def test_example_sps_mdp_passes_grompp_without_notes(gmx, shared_data, tmp_path):
    import subprocess
    res = subprocess.run([gmx, "-quiet", "grompp", "-f", str(ROOT / "examples" / "sps" / "md.mdp"),
                          "-c", str(shared_data / "sps" / "aa.gro"), "-p", str(ROOT / "topologies" / "sps.top"),
                          "-o", str(tmp_path / "md.tpr"), "-po", str(tmp_path / "mdout.mdp")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "WARNING" not in res.stderr and "NOTE" not in res.stderr, res.stderr


def test_published_sps_mdp_is_refused_like_grompp_does(shared_data, tmp_path, caplog):
    """The published sPS md.mdp (GROMACS 4.6 era) sets both unconstrained-start and continuation, which
    grompp 2022 refuses; without the second, its obsolete entries are a warning, and it says
    constraints = none and ref_t = 313, which is not how the published trajectories ran."""
    src = shared_data / "sps" / "md.mdp"
    with pytest.raises(ConfigError, match=r"unconstrained-start is set here and continuation at line \d+: "
                                          r"unconstrained-start is the old name of continuation"):
        RunParameters.read(src)
    fixed = write(tmp_path, "".join(line for line in src.read_text().splitlines(True)
                                    if not line.startswith("continuation")))
    with caplog.at_level(logging.WARNING, logger="gmx_dbm"):
        p = RunParameters.read(fixed)
    assert "ignoring obsolete entries, as GROMACS 2022 does: title (line 3), cpp (line 4)" in caplog.text
    assert p.constraints()[0] == "none" and p.temperature()[0] == 313.0


@pytest.mark.parametrize("argv", [["-m", "A", "B"], ["-m", "A", "-m", "B"]])
def test_backmap_takes_mapping_files_either_way(argv):
    from gmx_dbm.cli import build_parser
    args = build_parser().parse_args(["backmap", "-c", "cg.gro", "-p", "a.top", "-o", "o.gro", *argv])
    assert args.mapping == ["A", "B"]


def test_frame_selection_of_the_command_line():
    import argparse

    from gmx_dbm.commands.backmap import frame_selection
    assert [i for i in range(10) if i in frame_selection("2:8:3")] == [2, 5]
    assert [i for i in range(6) if i in frame_selection("3:")] == [3, 4, 5]
    assert [i for i in range(10) if i in frame_selection("0,5,9")] == [0, 5, 9]
    for bad in ("a:b", "-1:4", "0:4:0", "1,-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            frame_selection(bad)
