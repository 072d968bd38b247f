"""Bad-input corpus (every case is listed in docs/RELIABILITY.md).

Every case runs a command on one malformed or inconsistent input and asserts the contract of
``gmx_dbm.cli``: exit code 2; stderr is exactly one line ``gmx_dbm CMD: error: ...`` that names the file
and line (or the molecule/atom/bead/key) and says what was expected; nothing on stdout; no traceback
(``--debug`` gives one); and no file created, changed or removed anywhere the command could write (the
case's folder, the inputs, the model). Cases run in-process through ``gmx_dbm.cli.main``; those marked
``sub`` run again as ``python -m gmx_dbm`` subprocesses.

The hand-written inputs are in ``tests/bad_inputs/`` (each says what is wrong in its title or first
comment); binary ones (.xtc, checkpoints, model files) are made from a tiny toy model trained once per
module on ``tests/data/toy.*`` (about 2 s).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gmx_dbm.cli import main  # noqa: E402
from gmx_dbm.errors import GmxDbmError  # noqa: E402
from toy import build_toy_model, toy_config  # noqa: E402  (tests/toy.py)

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_inputs"
DATA = ROOT / "tests" / "data"

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny toy model, its training checkpoint, the toy CG frame and the binary bad inputs."""
    from gmx_dbm.io import AtomInfo, Frame, open_writer, read_frame

    built = build_toy_model(tmp_path_factory.mktemp("toy_model"))
    d, cg, model, cfg = built["dir"], built["cg"], built["model"], built["config"]
    gen = d / "generated"
    gen.mkdir()
    fr = read_frame(cg)
    # a CG .xtc with 3 beads where the topology + mapping give 4
    atoms = AtomInfo(fr.atoms.names[:3], fr.atoms.resnames[:3], fr.atoms.resids[:3])
    with open_writer(gen / "cg_3_beads.xtc", atoms) as w:
        for _ in range(2):
            w.write(Frame(fr.positions[:3], fr.box))
    (gen / "empty.xtc").write_bytes(b"")
    (gen / "empty.gro").write_text("")
    blob = model.read_bytes()
    (gen / "truncated.safetensors").write_bytes(blob[: len(blob) // 2])
    (gen / "not_a_model.safetensors").write_text("this is not a model file\n")
    ck = (d / "run" / "last.pt").read_bytes()
    (gen / "truncated_last.pt").write_bytes(ck[: len(ck) // 2])
    return {"dir": d, "cg": cg, "model": model, "checkpoint": d / "run" / "last.pt", "gen": gen,
            "config": cfg}


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    argv: list            # templates: {B} bad_inputs, {D} tests/data, {R} repo root, {G} generated,
                          # {M} toy model, {CG} toy CG frame, {T} the case's folder, {OUT} {T}/out
    expect: list          # substrings of the error line: the location and what was expected
    prepare: object = None  # prepare(T, toy) writes the case's own files before the snapshot
    sub: bool = False     # also run as a subprocess
    only_root_skip: bool = False
    needs_gmx: bool = False  # relax looks for GROMACS before it reads its inputs
    cmd: str = field(init=False, default="")

    def __post_init__(self):
        self.cmd = self.argv[0]


MAP = ["map", "-p", "{D}/toy.top", "-m", "{D}/toy.map", "-o", "{OUT}/cg.gro"]
ENERGY = ["energy", "-p", "{D}/toy.top"]
BACKMAP_TOY = ["backmap", "-p", "{D}/toy.top", "-m", "{D}/toy.map", "-o", "{OUT}/aa.gro", "--gibbs", "1",
               "--threads", "1"]
BACKMAP = BACKMAP_TOY + ["--model", "{M}"]


def _foreign_backmap_checkpoint(t, toy):
    """{OUT}/aa.gro.cpt of a run with other settings (seed 99), and its partial output."""
    import json
    cpt = {"format": "gmx_dbm backmap checkpoint", "version": 1, "frames": 1, "nbytes": 10, "quality": [],
           "fingerprint": {"settings": {"seed": 99}}}
    (t / "out" / "aa.gro.cpt").write_text(json.dumps(cpt))
    (t / "out" / ".aa.gro.part.gro").write_text("0123456789")


def _cfg(**kw):
    """prepare(): write {T}/cfg.toml (toy config, output {T}/run) with overrides."""
    def prepare(t, toy):
        toy_config(t / "cfg.toml", t / "run", toy["cg"], **kw)
    return prepare


def _resume_from(checkpoint_key, top=None):
    """prepare(): {T}/run/last.pt from the toy run (or a truncated copy); config on ``top``."""
    def prepare(t, toy):
        (t / "run").mkdir()
        src = toy["checkpoint"] if checkpoint_key == "checkpoint" else toy["gen"] / checkpoint_key
        shutil.copyfile(src, t / "run" / "last.pt")
        kw = {}
        if top == "edited":
            # the same topology with one comment more: another file hash than the checkpoint's
            (t / "edited.top").write_text((DATA / "toy.top").read_text() + "; edited after training\n")
            kw["top"] = t / "edited.top"
        toy_config(t / "cfg.toml", t / "run", toy["cg"], **kw)
    return prepare


def _train_output_in_a_file(t, toy):
    (t / "a_file").write_text("a file, not a folder\n")
    toy_config(t / "cfg.toml", t / "a_file" / "run", toy["cg"])


def _existing_output(name):
    def prepare(t, toy):
        (t / "out" / name).write_text("a previous result that a failed run must leave alone\n")
    return prepare


CASES = [
    # --- .gro reader (all-atom structures for map/energy, CG frames for backmap) -----------------------
    Case("gro-truncated", MAP + ["-f", "{B}/truncated.gro"],
         ["truncated.gro:13", "file ends after 10 of 14 atom lines"], sub=True),
    Case("gro-count-not-integer", ENERGY + ["-c", "{B}/count_not_int.gro"],
         ["count_not_int.gro:2", "expected the number of atoms (an integer)", "'fourteen'"]),
    Case("gro-count-wrong", MAP + ["-f", "{B}/count_wrong.gro"],
         ["count_wrong.gro:2", "has 12 atoms, expected 14"]),
    Case("gro-coordinate-not-number", ENERGY + ["-c", "{B}/coord_not_number.gro"],
         ["coord_not_number.gro:7", "expected a number for x", "'0.3x0'"]),
    Case("gro-coordinate-nan", MAP + ["-f", "{B}/coord_nan.gro"],
         ["coord_nan.gro:6", "NaN or infinite y coordinate", "expected a finite number"]),
    Case("gro-coordinate-inf", ENERGY + ["-c", "{B}/coord_inf.gro"],
         ["coord_inf.gro:9", "NaN or infinite y coordinate", "expected a finite number"]),
    Case("gro-box-zero", MAP + ["-f", "{B}/box_zero.gro"],
         ["box_zero.gro:17", "box is zero", "needs the periodic box"]),
    Case("gro-box-singular", ENERGY + ["-c", "{B}/box_singular.gro"],
         ["box_singular.gro:17", "box is singular"]),
    Case("gro-empty", MAP + ["-f", "{G}/empty.gro"],
         ["empty.gro:1", "empty file; expected a title line"]),
    Case("cg-gro-coordinate-inf", BACKMAP + ["-c", "{B}/cg_coord_inf.gro"],
         ["cg_coord_inf.gro:5", "NaN or infinite z coordinate", "expected a finite number"]),
    Case("cg-gro-bad-second-frame", BACKMAP + ["-c", "{B}/cg_second_frame_bad.gro"],
         ["cg_second_frame_bad.gro:14", "frame 1", "box is zero"], prepare=_existing_output("aa.gro")),
    # --- .pdb reader ---------------------------------------------------------------------------------
    Case("pdb-coordinate-not-number", ENERGY + ["-c", "{B}/coord_not_number.pdb"],
         ["coord_not_number.pdb:7", "expected x y z in columns 31-54"]),
    # --- .xtc reader ---------------------------------------------------------------------------------
    Case("cg-xtc-wrong-bead-count", BACKMAP + ["-c", "{G}/cg_3_beads.xtc"],
         ["cg_3_beads.xtc", "frame 0", "has 3 atoms, expected 4"], sub=True),
    Case("cg-xtc-empty", BACKMAP + ["-c", "{G}/empty.xtc"],
         ["empty.xtc", "empty file", "expected XTC frames"]),
    Case("map-atom-names-out-of-order", MAP + ["-f", "{B}/names_swapped.gro"],
         ["names_swapped.gro (frame 0)", "atom 1 is named 'H1' but the topology expects 'C1'"]),
    Case("energy-box-thinner-than-cutoff", ENERGY + ["-c", "{B}/box_thin.gro"],
         ["box_thin.gro (frame 0)", "longer than half the smallest box height", "1.8"]),
    # --- thermalisation options ----------------------------------------------------------------------
    Case("backmap-negative-temperature", BACKMAP + ["-c", "{CG}", "--temperature", "-5"],
         ["temperature must be positive", "-5"]),
    Case("backmap-negative-md-steps", BACKMAP + ["-c", "{CG}", "--md-steps", "-1"],
         ["MD steps must be 0 (off) or positive", "-1"]),
    Case("backmap-stereo-contradiction", BACKMAP + ["-c", "{CG}", "--no-stereo", "--stereo-template", "{CG}"],
         ["--no-stereo contradicts --stereo/--stereo-template"]),
    # --- devices, precision and checkpoints of backmap ---------------------------------------------------
    Case("backmap-device-missing", BACKMAP + ["-c", "{CG}", "--device", "cuda:99"],
         ["--device", "device 'cuda:99' requested but"], sub=True),
    Case("backmap-device-unknown", BACKMAP + ["-c", "{CG}", "--device", "tpu"],
         ["--device", "unknown device 'tpu'", "expected cpu, cuda or cuda:N"]),
    Case("backmap-fp16-on-cpu", BACKMAP + ["-c", "{CG}", "--precision", "fp16"],
         ["--precision", "fp16 autocast needs a CUDA device", "use bf16"]),
    Case("backmap-resume-other-settings", BACKMAP + ["-c", "{CG}", "--resume"],
         ["aa.gro.cpt", "checkpoint made for other inputs or settings", "without --resume to start afresh"],
         prepare=_foreign_backmap_checkpoint),
    Case("backmap-resume-damaged-checkpoint", BACKMAP + ["-c", "{CG}", "--resume"],
         ["aa.gro.cpt", "cannot read the checkpoint", "remove it to start afresh"],
         prepare=lambda t, toy: (t / "out" / "aa.gro.cpt").write_text('{"format": "gmx_dbm backmap checkp')),
    # --- run parameters of backmap (-f MDP) -----------------------------------------------------------
    Case("backmap-mdp-h-angles", BACKMAP + ["-c", "{CG}", "-f", "{B}/mdp_h_angles.mdp"],
         ["mdp_h_angles.mdp:5", "constraints = h-angles is not supported", "none, h-bonds or all-bonds"], sub=True),
    Case("backmap-mdp-ref-t-per-group", BACKMAP + ["-c", "{CG}", "-f", "{B}/mdp_ref_t_groups.mdp"],
         ["mdp_ref_t_groups.mdp:6", "ref-t gives the coupling groups different temperatures (TOY 300 K, SOL 350 K)",
          "give --temperature K"]),
    Case("backmap-mdp-old-and-new-name", BACKMAP + ["-c", "{CG}", "-f", "{B}/mdp_old_and_new_name.mdp"],
         ["mdp_old_and_new_name.mdp:5", "unconstrained-start is set here and continuation at line 3",
          "grompp refuses both too"]),
    # --- topology reader -----------------------------------------------------------------------------
    Case("top-missing-include", ["energy", "-c", "{D}/toy.gro", "-p", "{B}/missing_include.top"],
         ["missing_include.top:2", "#include file 'toy_ff_missing.itp' not found", "searched:"], sub=True),
    Case("top-unknown-atom-type", ["map", "-f", "{D}/toy.gro", "-p", "{B}/unknown_atomtype.top",
                                   "-m", "{D}/toy.map", "-o", "{OUT}/cg.gro"],
         ["unknown_atomtype.top:22", "molecule TOY", "atom type 'CX' of atom 5 (C3) is not in [ atomtypes ]"]),
    Case("top-unknown-bond-type", ["energy", "-c", "{D}/toy.gro", "-p", "{B}/unknown_bondtype.top"],
         ["unknown_bondtype.top:31", "molecule TOY", "no parameters for bond 3(C2/C)-5(C3/C)",
          "[ bondtypes ]"]),
    Case("top-unterminated-ifdef", ["backmap", "-c", "{CG}", "-p", "{B}/unterminated_ifdef.top",
                                    "-m", "{D}/toy.map", "-o", "{OUT}/aa.gro", "--model", "{M}"],
         ["unterminated_ifdef.top:26", "unterminated #if/#ifdef", "#endif"]),
    Case("top-molecules-count-vs-structure", ["energy", "-c", "{D}/toy.gro", "-p", "{B}/molecules_count.top"],
         ["toy.gro", "has 14 atoms", "molecules_count.top has 21", "3 x TOY"]),
    Case("top-molecules-count-vs-trajectory", ["map", "-f", "{D}/toy.gro", "-p", "{B}/molecules_count.top",
                                               "-m", "{D}/toy.map", "-o", "{OUT}/cg.gro"],
         ["toy.gro:2", "has 14 atoms, expected 21"]),
    Case("top-molecules-unknown-type", ["energy", "-c", "{D}/toy.gro", "-p", "{B}/molecules_unknown.top"],
         ["molecules_unknown.top:40", "'TOX'", "is not defined"]),
    Case("top-not-text", ["energy", "-c", "{D}/toy.gro", "-p", "{G}/cg_3_beads.xtc"],
         ["cg_3_beads.xtc:1", "not UTF-8 text (byte 0x", "expected a GROMACS topology"]),
    # --- mapping reader ------------------------------------------------------------------------------
    Case("map-atom-not-in-topology", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                      "-m", "{B}/atom_not_in_topology.map", "-o", "{OUT}/cg.gro"],
         ["atom_not_in_topology.map:11", "atom 9 is not in moleculetype TOY (atoms 1..7)"]),
    Case("map-atom-in-no-bead", ["backmap", "-c", "{CG}", "-p", "{D}/toy.top", "-m", "{B}/atom_in_no_bead.map",
                                 "-o", "{OUT}/aa.gro", "--model", "{M}"],
         ["atom_in_no_bead.map:4", "are in no bead: 6 (H3)"]),
    Case("map-align-partner-missing", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                       "-m", "{B}/align_missing_bead.map", "-o", "{OUT}/cg.gro"],
         ["align_missing_bead.map:20", "bead 3 does not exist (beads 1..2)"]),
    Case("map-bead-order-vs-cg", BACKMAP + ["-c", "{B}/cg_bead_order.gro"],
         ["cg_bead_order.gro", "frame 0", "bead 1 is named 'B1' but the mapping expects 'A1'"]),
    Case("map-not-text", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top", "-m", "{G}/cg_3_beads.xtc",
                          "-o", "{OUT}/cg.gro"],
         ["cg_3_beads.xtc:1", "outside a section", "...'", "expected a '[ map ]' or other section header"]),
    Case("map-backward-bead-not-in-martini", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                              "-m", "{B}/backward_unknown_bead.map", "-o", "{OUT}/cg.gro"],
         ["backward_unknown_bead.map:16", "atom C3 is in bead C, which is not in [ martini ] (A B)"]),
    Case("map-backward-atom-names-differ", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                            "-m", "{B}/backward_atom_names.map", "-o", "{OUT}/cg.gro"],
         ["backward_atom_names.map", "moleculetype TOY", "residue TOY1", "missing HX, extra H3"]),
    Case("map-unit-atom-uncovered", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                     "-m", "{B}/unit_atom_uncovered.map", "-o", "{OUT}/cg.gro"],
         ["unit_atom_uncovered.map", "moleculetype TOY cannot be cut into the units", "toy.top:23",
          "atom 7 (C4, type C"]),
    Case("map-unit-bond-unknown-atom", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                        "-m", "{B}/unit_bond_unknown_atom.map", "-o", "{OUT}/cg.gro"],
         ["unit_bond_unknown_atom.map:18", "bond names atom C9, which is not in [ atoms ] of unit TOY"]),
    Case("map-unit-section-before-unit", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                          "-m", "{B}/unit_section_before_unit.map", "-o", "{OUT}/cg.gro"],
         ["unit_section_before_unit.map:2", "section [atoms] before any [ unit ]"]),
    # --- training config -----------------------------------------------------------------------------
    Case("config-unknown-key", ["train", "{T}/cfg.toml", "--no-progress"],
         ["cfg.toml", "unknown key(s) train.checkpoint_evry", "valid keys:", "train.checkpoint_every"],
         prepare=_cfg(extra_train="checkpoint_evry = 3"), sub=True),
    Case("config-unknown-top-level-key", ["train", "{T}/cfg.toml", "--no-progress"],
         ["cfg.toml", "unknown key(s) learning_rate", "valid keys:"],
         prepare=_cfg(extra_top="learning_rate = 0.001")),
    Case("config-wrong-type", ["train", "{T}/cfg.toml", "--no-progress"],
         ["cfg.toml", "key 'seed' must be int, got str '1'"], prepare=_cfg(seed='"1"')),
    Case("config-keep-steps-not-steps", ["train", "{T}/cfg.toml", "--no-progress"],
         ["cfg.toml", "train.keep_steps must be a list of positive step numbers, got [0, 'ten']"],
         prepare=_cfg(extra_train="keep_steps = [0, \"ten\"]")),
    Case("config-missing-data-file", ["train", "{T}/cfg.toml", "--no-progress"],
         ["cfg.toml", "'data[0].aa': file not found", "no_such_aa.xtc"],
         prepare=_cfg(aa="no_such_aa.xtc")),
    Case("config-not-text", ["train", "{T}/cfg.toml", "--no-progress"],
         ["cfg.toml", "not UTF-8 text; expected a TOML (or YAML) config"],
         prepare=lambda t, toy: (t / "cfg.toml").write_bytes((toy["gen"] / "cg_3_beads.xtc").read_bytes())),
    Case("train-data-nan", ["train", "{T}/cfg.toml", "--no-progress"],
         ["coord_nan.gro:6", "NaN or infinite y coordinate"], prepare=_cfg(aa=BAD / "coord_nan.gro")),
    Case("train-data-bad-mapping", ["train", "{T}/cfg.toml", "--no-progress"],
         ["atom_in_no_bead.map:4", "in no bead: 6 (H3)"], prepare=_cfg(map=BAD / "atom_in_no_bead.map")),
    # --- checkpoints and model files -----------------------------------------------------------------
    Case("checkpoint-other-topology", ["train", "{T}/cfg.toml", "--resume", "--no-progress"],
         ["last.pt", "checkpoint was made for other topology/mapping files", "hash mismatch", "edited.top"],
         prepare=_resume_from("checkpoint", top="edited")),
    Case("checkpoint-truncated", ["train", "{T}/cfg.toml", "--resume", "--no-progress"],
         ["last.pt", "refused or corrupt checkpoint"], prepare=_resume_from("truncated_last.pt")),
    Case("model-truncated", BACKMAP_TOY + ["-c", "{CG}", "--model", "{G}/truncated.safetensors"],
         ["truncated.safetensors", "not a readable safetensors model file"]),
    Case("model-not-safetensors", BACKMAP_TOY + ["-c", "{CG}", "--model", "{G}/not_a_model.safetensors"],
         ["not_a_model.safetensors", "not a readable safetensors model file"]),
    Case("model-is-a-checkpoint", BACKMAP_TOY + ["-c", "{CG}", "--model", "{G}/truncated_last.pt"],
         ["truncated_last.pt", "not a readable safetensors model file"]),
    Case("model-missing", BACKMAP_TOY + ["-c", "{CG}", "--model", "{T}/no_such_model.safetensors"],
         ["no_such_model.safetensors", "model file not found"]),
    Case("model-for-other-system", ["backmap", "-c", "{R}/examples/sps/cg.gro", "-p", "{R}/topologies/sps.top",
                                    "-m", "{R}/mappings/sps.map", "-o", "{OUT}/aa.gro", "--model", "{M}"],
         ["model.safetensors", "model cannot backmap this system", "atom types C_AR, H_AR unknown to it"]),
    # --- evaluate and relax --------------------------------------------------------------------------
    Case("evaluate-candidate-nan", ["evaluate", "-r", "{D}/toy.gro", "-f", "{B}/coord_nan.gro", "-p", "{D}/toy.top",
                                    "--no-energies", "--json", "{OUT}/report.json"],
         ["coord_nan.gro:6", "NaN or infinite y coordinate", "expected a finite number"]),
    Case("evaluate-reference-truncated", ["evaluate", "-r", "{B}/truncated.gro", "-f", "{D}/toy.gro",
                                          "-p", "{D}/toy.top", "--no-energies", "-o", "{OUT}/report"],
         ["truncated.gro:13", "file ends after 10 of 14 atom lines"]),
    Case("evaluate-report-dir-is-a-file", ["evaluate", "-r", "{D}/toy.gro", "-f", "{D}/toy.gro", "-p", "{D}/toy.top",
                                           "--no-energies", "-o", "{T}/a_file"],
         ["a_file", "exists and is not a folder", "expected the report folder"],
         prepare=lambda t, toy: (t / "a_file").write_text("a file, not a folder\n")),
    Case("relax-box-zero", ["relax", "-c", "{B}/box_zero.gro", "-p", "{D}/toy.top", "-o", "{OUT}/relaxed.gro"],
         ["box_zero.gro:17", "box is zero"], needs_gmx=True),
    Case("relax-unknown-bond-type", ["relax", "-c", "{D}/toy.gro", "-p", "{B}/unknown_bondtype.top",
                                     "-o", "{OUT}/relaxed.gro"],
         ["unknown_bondtype.top:31", "no parameters for bond 3(C2/C)-5(C3/C)"], needs_gmx=True),
    # --- outputs -------------------------------------------------------------------------------------
    Case("output-folder-missing", BACKMAP_TOY[:5] + ["-c", "{CG}", "-o", "{T}/no_such_dir/aa.gro", "--model", "{M}"],
         ["no_such_dir/aa.gro", "output folder", "does not exist"]),
    Case("output-folder-is-a-file", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top", "-m", "{D}/toy.map",
                                     "-o", "{T}/a_file/cg.gro"],
         ["a_file/cg.gro", "output folder", "is not a folder"],
         prepare=lambda t, toy: (t / "a_file").write_text("a file, not a folder\n")),
    Case("output-is-a-directory", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top", "-m", "{D}/toy.map",
                                   "-o", "{T}/cg.gro"],
         ["cg.gro: is a directory, expected a file name"], prepare=lambda t, toy: (t / "cg.gro").mkdir()),
    Case("output-unknown-format", ["map", "-f", "{D}/toy.gro", "-p", "{D}/toy.top", "-m", "{D}/toy.map",
                                   "-o", "{OUT}/cg.xyz"],
         ["cg.xyz", "unknown output format '.xyz'", "known: .gro, .xtc, .pdb"]),
    Case("train-output-not-a-folder", ["train", "{T}/cfg.toml", "--no-progress"],
         ["a_file/run", "cannot write the training output folder", "expected a writable folder"],
         prepare=_train_output_in_a_file),
    Case("output-json-folder-missing", ENERGY + ["-c", "{D}/toy.gro", "--json", "{T}/no_such_dir/e.json"],
         ["no_such_dir/e.json", "output folder", "does not exist"]),
    Case("output-folder-not-writable", MAP + ["-f", "{D}/toy.gro"],
         ["cg.gro", "output folder", "is not writable"], only_root_skip=True,
         prepare=lambda t, toy: os.chmod(t / "out", 0o555)),
]

CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


def _snapshot(*dirs) -> dict:
    """Every path under ``dirs`` with its content hash (folders as 'dir'), hidden files included."""
    snap = {}
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            snap[str(p)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


def _changed(before: dict, after: dict) -> list:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _setup(case, toy, tmp_path):
    t = tmp_path / "case"
    (t / "out").mkdir(parents=True)
    if case.only_root_skip and os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop root from writing (case runs as a user)")
    if case.needs_gmx:
        from gmx_dbm.gromacs import find_gmx
        if find_gmx(required=False) is None:
            pytest.skip("GROMACS not found (relax needs it before reading inputs); run scripts/install_gromacs.sh")
    if case.prepare is not None:
        case.prepare(t, toy)
    ctx = {"B": BAD, "D": DATA, "R": ROOT, "G": toy["gen"], "M": toy["model"], "CG": toy["cg"], "T": t,
           "OUT": t / "out"}
    argv = [a.format(**ctx) for a in case.argv]
    watched = (t, BAD, DATA, toy["dir"])
    return t, argv, watched


def _check_error_line(case, err: str, out: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got:\n{err}"
    line = lines[0]
    prefix = f"gmx_dbm {case.cmd}: error: "
    assert line.startswith(prefix), line
    for piece in case.expect:
        assert piece in line, f"{piece!r} not in {line!r}"
    assert out == "", f"nothing expected on stdout, got {out!r}"
    return line


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_input(case, toy, tmp_path, capsys):
    t, argv, watched = _setup(case, toy, tmp_path)
    before = _snapshot(*watched)
    capsys.readouterr()
    try:
        rc = main(argv)
    finally:
        if case.only_root_skip:
            os.chmod(t / "out", 0o755)  # let pytest clean up
    out, err = capsys.readouterr()
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    _check_error_line(case, err, out)
    after = _snapshot(*watched)
    assert after == before, f"files created/changed/removed: {_changed(before, after)}"


def test_every_case_is_documented_and_every_command_covered():
    """docs/RELIABILITY.md lists every case of this corpus by its id, and every command has cases."""
    doc = (ROOT / "docs" / "RELIABILITY.md").read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"cases not in docs/RELIABILITY.md: {missing}"
    assert {c.cmd for c in CASES} >= {"map", "energy", "backmap", "train", "evaluate", "relax"}


SUBPROCESS_CASES = [c for c in CASES if c.sub]


def _run_subprocess(argv, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "gmx_dbm", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_bad_input_subprocess(case, toy, tmp_path):
    """The same contract from a real process: exit status 2, one stderr line with -q."""
    t, argv, watched = _setup(case, toy, tmp_path)
    before = _snapshot(*watched)
    res = _run_subprocess(["-q", *argv], cwd=t)
    assert res.returncode == 2, res.stderr
    _check_error_line(case, res.stderr, res.stdout)
    after = _snapshot(*watched)
    assert after == before, f"files created/changed/removed: {_changed(before, after)}"


def test_without_quiet_error_is_last_line(toy, tmp_path):
    """Without -q, INFO lines may come first, but the error is the last line and there is no traceback."""
    case = next(c for c in CASES if c.id == "cg-xtc-wrong-bead-count")
    t, argv, watched = _setup(case, toy, tmp_path)
    res = _run_subprocess(argv, cwd=t)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert lines[-1].startswith("gmx_dbm backmap: error: ") and "has 3 atoms, expected 4" in lines[-1]
    assert sum("error" in line for line in lines) == 1, res.stderr


def test_debug_shows_traceback(toy, tmp_path):
    """--debug: in-process the exception propagates; from a process, Python prints the traceback."""
    case = next(c for c in CASES if c.id == "gro-truncated")
    t, argv, watched = _setup(case, toy, tmp_path)
    with pytest.raises(GmxDbmError, match="file ends after 10 of 14 atom lines"):
        main(["--debug", *argv])
    res = _run_subprocess([argv[0], "--debug", *argv[1:]], cwd=t)
    assert res.returncode != 0
    assert "Traceback (most recent call last)" in res.stderr
    assert "TrajectoryError" in res.stderr
    assert list((t / "out").iterdir()) == []
