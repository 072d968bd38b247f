"""The backmapping engine and command with the shipped models."""
from __future__ import annotations

import numpy as np
import pytest

from gmx_dbm.backmap import backmap, resolve_model, shipped_model_path
from gmx_dbm.cli import main
from gmx_dbm.errors import ModelFileError
from gmx_dbm.geometry import minimum_image
from gmx_dbm.io import AtomInfo, open_writer, read_frame, read_frames
from gmx_dbm.topology import read_topology
from gmx_dbm.mapping import read_mapping


@pytest.fixture(scope="module")
def shipped(root):
    for name in ("sps", "transfer"):
        if not shipped_model_path(name).is_file():
            pytest.skip(f"shipped model {name} not installed in gmx_dbm/data/models")
    return root


@pytest.mark.slow
def test_example_backmaps_every_atom_in_topology_order(shipped, tmp_path):
    root = shipped
    out = tmp_path / "aa.gro"
    assert main(["-q", "backmap", "-c", str(root / "examples/sps/cg.gro"), "-p", str(root / "topologies/sps.top"),
                 "-m", str(root / "mappings/sps.map"), "-o", str(out), "--gibbs", "0", "--no-quality",
                 "--md-steps", "20", "--temperature", "453"]) == 0
    system = read_topology(root / "topologies/sps.top")
    flat = system.flat()
    cg = read_frame(root / "examples/sps/cg.gro")
    fr = read_frame(out)
    assert fr.n_atoms == flat.n_atoms == 5832
    assert list(fr.atoms.names) == list(flat.names)
    assert list(fr.atoms.resnames) == list(flat.resnames)
    assert np.allclose(fr.box, cg.box, atol=1e-5)
    # wrapped into the box as GROMACS does for triclinic boxes (the brick 0 <= x_d < box_dd)
    diag = np.diag(fr.box)
    assert fr.positions.min() >= -1e-3 and np.all(fr.positions.max(0) <= diag + 1e-3)
    # all bonds constrained (the model card's default) to the topology's lengths
    idx, par = flat.bonded["bonds"][1]
    d = np.linalg.norm(minimum_image(fr.positions[idx[:, 1]] - fr.positions[idx[:, 0]], fr.box), axis=1)
    assert np.abs(d - par[:, 0]).max() < 2e-3
    # every atom stays near its bead
    mapping = read_mapping([root / "mappings/sps.map"], system).flat()
    near = np.linalg.norm(minimum_image(fr.positions - cg.positions[mapping.atom_bead], fr.box), axis=1)
    assert near.max() < 0.6


@pytest.mark.slow
def test_trajectory_streams_all_frames_to_pdb_and_xtc(shipped, tmp_path):
    root = shipped
    cg = read_frame(root / "examples/sps/cg.gro")
    traj = tmp_path / "cg.xtc"
    with open_writer(traj, AtomInfo(cg.atoms.names, cg.atoms.resnames, cg.atoms.resids)) as w:
        for k in range(2):
            cg.time = float(k)
            w.write(cg)
    for ext in ("xtc", "pdb"):
        out = tmp_path / f"aa.{ext}"
        summary = backmap(traj, root / "topologies/sps.top", [root / "mappings/sps.map"], out, gibbs=0,
                          progress=False, quality=False, md_steps=0)
        frames = list(read_frames(out))
        assert summary["frames"] == 2 and len(frames) == 2
        assert all(f.n_atoms == 5832 for f in frames)


def test_default_model_follows_the_topology(shipped):
    root = shipped
    sps = read_topology(root / "topologies/sps.top")
    assert resolve_model(None, read_mapping([root / "mappings/sps.map"], sps)).stem == "sps"
    # the chemically specific model does not fit octane; the transferred one does
    octane = read_topology(root / "topologies/octane.top")
    assert resolve_model(None, read_mapping([root / "mappings/octane.map"], octane)).stem == "transfer"
    # one bead per monomer: the model trained for that CG resolution, not the transferable one
    assert resolve_model(None, read_mapping([root / "mappings/sps_monomer.map"], sps)).stem == "sps_monomer"


def test_no_fitting_model_is_a_clear_error(shipped, tmp_path):
    root = shipped
    toy = read_topology(root / "tests/data/toy.top")
    # bead types no shipped model knows
    text = (root / "tests/data/toy.map").read_text().replace(" A\n", " Q\n").replace(" B\n", " R\n")
    (tmp_path / "toy.map").write_text(text)
    smap = read_mapping([tmp_path / "toy.map"], toy)
    assert set(map(str, smap.flat().bead_types)) == {"Q", "R"}
    with pytest.raises(ModelFileError, match="no shipped model fits"):
        resolve_model(None, smap)
    with pytest.raises(ModelFileError, match="unknown model"):
        resolve_model("nonsense", smap)


@pytest.mark.slow
def test_proposals_and_selection_are_deterministic(shipped, tmp_path):
    root = shipped
    outs = []
    for k in range(2):
        out = tmp_path / f"p{k}.gro"
        backmap(root / "examples/sps/cg.gro", root / "topologies/sps.top", [root / "mappings/sps.map"], out,
                gibbs=1, proposals=4, select_temperature=453.0, seed=5, progress=False, quality=False,
                md_steps=10, temperature=453.0)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_thermalisation_relaxes_the_generated_frame_and_keeps_the_beads(shipped, tmp_path):
    """--md-steps: restrained Langevin dynamics lowers the strain the generator leaves (angle and LJ
    energies) while every bead's mapped centre stays on its CG position."""
    import torch

    from gmx_dbm.ff.forcefield import ForceField
    root = shipped
    system = read_topology(root / "topologies/sps.top")
    flat = system.flat()
    mflat = read_mapping([root / "mappings/sps.map"], system).flat()
    cg = read_frame(root / "examples/sps/cg.gro")
    ff = ForceField(flat)
    energies, centres = {}, {}
    for steps in (0, 100):
        out = tmp_path / f"md{steps}.gro"
        s = backmap(root / "examples/sps/cg.gro", root / "topologies/sps.top", [root / "mappings/sps.map"], out,
                    gibbs=0, md_steps=steps, temperature=453.0, progress=False, quality=False)
        assert s["md_steps"] == steps and s["temperature"] == 453.0
        fr = read_frame(out)
        with torch.no_grad():
            e = ff(torch.as_tensor(fr.positions)[None], torch.as_tensor(fr.box)[None])
        energies[steps] = {k: float(v[0]) for k, v in e.items()}
        coo = mflat.centre.tocoo()  # bead centre = R_b + sum_a w_a * minimum_image(r_a - R_b)
        rel = minimum_image(fr.positions[coo.col] - cg.positions[coo.row], fr.box) * coo.data[:, None]
        off = np.zeros_like(cg.positions)
        np.add.at(off, coo.row, rel)
        centres[steps] = np.linalg.norm(off, axis=1)
    assert energies[100]["angle"] < 0.8 * energies[0]["angle"]
    assert energies[100]["lj_sr"] < energies[0]["lj_sr"]
    # the restraints (5000 kJ/mol/nm2) hold the beads within thermal reach of their CG positions (a rough
    # start here: no sweeps; measured median 0.063 nm, at the default 4 sweeps 0.028 nm)
    assert centres[100].max() < 0.3 and np.median(centres[100]) < 0.08


@pytest.mark.slow
def test_stereocentres_come_out_with_the_training_handedness(shipped, tmp_path):
    """Default stereo ('auto', the card's tacticity pattern): every chain's backbone CH centres follow the
    syndiotactic pattern of the training data, most chains with the training data's absolute handedness
    (each chain takes the one most of its generated centres have), and every hydrogen is opposite its
    heavy neighbours, also from a rough start (1 sweep) where the generator alone inverts many;
    --no-stereo keeps only the hydrogen placement."""
    from gmx_dbm import stereo
    from gmx_dbm.model.checkpoint import read_model_meta
    root = shipped
    flat = read_topology(root / "topologies/sps.top").flat()
    centres, signs = stereo.targets(flat, read_model_meta(shipped_model_path("sps"))["card"]["stereo"])
    assert len(signs) == 324
    mol = np.asarray(flat.mol_index)[centres[:, 0]]
    out_of_pattern, mirrored = {}, {}
    for mode in ("auto", "none"):
        out = tmp_path / f"{mode}.gro"
        backmap(root / "examples/sps/cg.gro", root / "topologies/sps.top", [root / "mappings/sps.map"], out,
                gibbs=1, md_steps=0, progress=False, quality=False, stereo=mode, seed=3)
        fr = read_frame(out)
        rel = stereo.handedness(fr.positions, fr.box, centres) * signs
        per_chain = [set(rel[mol == m].tolist()) for m in range(36)]
        out_of_pattern[mode] = sum(len(c) > 1 for c in per_chain)
        mirrored[mode] = sum(c == {-1} for c in per_chain)
        # tolerance: .gro coordinates are rounded to 0.001 nm, and a rough start leaves a few nearly flat centres
        assert not stereo.hydrogens_inside(fr.positions, fr.box, stereo.find_centres(flat), tol=0.05).any()
    assert out_of_pattern["auto"] == 0 and out_of_pattern["none"] > 0
    assert mirrored["auto"] <= 3


@pytest.mark.slow
def test_regenerate_beads_redraws_only_those_beads(shipped):
    import torch

    from gmx_dbm.backmap import INFERENCE_CHUNK, Backmapper
    from gmx_dbm.model.features import build_state
    from gmx_dbm.model.sampler import generate_frame, regenerate_beads
    root = shipped
    system = read_topology(root / "topologies/sps.top")
    bm = Backmapper.build(system, read_mapping([root / "mappings/sps.map"], system), "sps", md_steps=0)
    cg = read_frame(root / "examples/sps/cg.gro")
    state = build_state(bm.recipe, bm.grid, cg.positions, cg.box)
    generate_frame(bm.generator, bm.recipe, bm.grid, state, torch.Generator().manual_seed(0), 0,
                   chunk=INFERENCE_CHUNK)
    before = state.positions.clone()
    beads = torch.tensor([4, 17, 300])
    runs = []
    for _ in range(2):
        state.positions = before.clone()
        regenerate_beads(bm.generator, bm.recipe, bm.grid, state, beads, torch.Generator().manual_seed(1))
        runs.append(state.positions.clone())
    assert torch.equal(runs[0], runs[1])          # deterministic for a given generator state
    moved = (runs[0] - before).norm(dim=1) > 0
    in_beads = torch.isin(torch.from_numpy(bm.recipe.atom_bead), beads)
    assert moved[in_beads].all() and not moved[~in_beads].any()
    assert bool(state.placed.all())
    # the redrawn atoms stay with their beads
    d = minimum_image((runs[0] - state.centres[torch.from_numpy(bm.recipe.atom_bead)]).numpy(), cg.box)
    assert np.linalg.norm(d, axis=1)[in_beads.numpy()].max() < 0.45


@pytest.mark.slow
def test_deformed_ring_has_its_bead_redrawn(shipped):
    """A phenyl ring folded onto itself after generation (its overlapping atoms are excluded from the
    force field, so the thermalisation cannot see them) is found and its bead redrawn by the generator;
    no other bead moves."""
    import torch

    from gmx_dbm.backmap import steps as S
    from gmx_dbm.quality import StructureChecks
    bm, cg, redraw, work = _example_up_to(shipped, S.RedrawDefects)
    checks = StructureChecks(bm.flat)
    assert len(checks.deformed_rings(work.positions.double().numpy(), cg.box)) == 0
    ring = checks.rings[5]
    x = work.positions.clone()
    x[ring[3]] = x[ring[0]] + torch.tensor([0.03, 0.04, 0.0])    # para carbon onto its opposite
    work.positions = work.state.positions = x
    assert checks.deformed_rings(x.double().numpy(), cg.box).tolist() == [5]
    before = x.clone()
    redraw(work)
    after = work.positions
    assert len(checks.deformed_rings(after.double().numpy(), cg.box)) == 0
    bead = int(bm.recipe.atom_bead[ring[3]])
    moved = (after - before).norm(dim=1) > 1e-6
    in_bead = torch.from_numpy(bm.recipe.atom_bead == bead)
    assert moved[in_bead].any()
    # nothing else is redrawn: the bond projection after the redraw shifts a few nearby atoms slightly
    shift = (after - before).norm(dim=1)[~in_bead]
    assert float(shift.max()) < 0.05 and int((shift > 0.005).sum()) < 20


@pytest.mark.slow
def test_stereo_redraws_leave_no_deformed_ring(shipped):
    """The stereo repair redraws the beads of inverted centres; a ring left deformed in the frame (here
    folded by hand, as a redrawn bead can come out) is redrawn after the round, so that the frame leaves
    the repair with every centre of its target handedness and no deformed ring."""
    from gmx_dbm.backmap import steps as S
    from gmx_dbm.quality import StructureChecks
    from gmx_dbm.stereo import handedness, repair
    bm, cg, stereo, work = _example_up_to(shipped, S.RepairStereo)
    assert stereo.defects is next(s for s in bm.steps if isinstance(s, S.RedrawDefects))
    checks = StructureChecks(bm.flat)
    box = np.asarray(cg.box, dtype=np.float64)
    cen = bm.stereo_targets.centres
    x = work.host_positions()
    signs = bm.stereo_targets.signs(x, box, beads=cg.positions)
    # one centre inverted (mirrored to the other hand) and a ring of another bead folded
    k = 10
    x, n = repair(x, box, cen[[k]], -handedness(x, box, cen[[k]]))
    assert n == 1
    ring = next(r for r in checks.rings if bm.recipe.atom_bead[r[0]] != bm.recipe.atom_bead[cen[k, 0]])
    x[ring[3]] = x[ring[0]] + np.array([0.03, 0.04, 0.0])
    assert len(checks.deformed_rings(x, box)) == 1
    work.set_positions(x)
    stereo(work)
    after = work.host_positions()
    assert len(checks.deformed_rings(after, box)) == 0
    assert (handedness(after, box, cen) == signs).all()


def _example_up_to(root, step_type):
    """The shipped example's backmapper (no thermalisation), its CG frame, its step of ``step_type`` and
    the frame's work after every step before that one."""
    import torch

    from gmx_dbm.backmap import steps as S
    system = read_topology(root / "topologies/sps.top")
    bm = Backmapper_build(system, root)
    cg = read_frame(root / "examples/sps/cg.gro")
    target = next(s for s in bm.steps if isinstance(s, step_type))
    work = S.FrameWork(0, cg.positions, cg.box, torch.Generator().manual_seed(0))
    for step in bm.steps:
        if step is target:
            break
        step(work)
    return bm, cg, target, work


def Backmapper_build(system, root):
    from gmx_dbm.backmap import Backmapper
    return Backmapper.build(system, read_mapping([root / "mappings/sps.map"], system), "sps", md_steps=0)
