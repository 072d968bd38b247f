"""Featurisation, networks, prior and checkpoints, on the project's own sPS files."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gmx_dbm.errors import ModelFileError
from gmx_dbm.io import read_frame
from gmx_dbm.topology import read_topology
from gmx_dbm.mapping import read_mapping
from gmx_dbm.model.checkpoint import load_checkpoint, load_model, save_model
from gmx_dbm.model.features import build_state, featurize
from gmx_dbm.model.networks import Critic, Generator, GroupNorm
from gmx_dbm.model.prior import prior_energy
from gmx_dbm.model.recipe import FeatureSpec, Recipe
from gmx_dbm.voxel import GridSpec, collapse, density_of

GRID = GridSpec()


@pytest.fixture(scope="module")
def sps(root):
    system = read_topology(root / "topologies" / "sps.top")
    mapping = read_mapping([root / "mappings" / "sps.map"], system)
    flat, mflat = system.flat(), mapping.flat()
    spec = FeatureSpec(sorted(set(map(str, flat.types))), sorted(set(map(str, mflat.bead_types))), {})
    recipe = Recipe(flat, mflat, spec)
    cg = read_frame(root / "examples" / "sps" / "cg.gro")
    # atoms scattered around their beads: enough structure for invariance checks, no reference needed
    rng = np.random.default_rng(0)
    pos = cg.positions[mflat.atom_bead] + rng.normal(scale=0.12, size=(flat.n_atoms, 3))
    return recipe, cg, pos


@pytest.fixture(scope="module")
def sps3(root):
    """The project's relaxed three-chain sPS reference (tests/data/sps3): recipe, all-atom and CG frames."""
    d = root / "tests" / "data" / "sps3"
    system = read_topology(d / "sps3.top")
    mapping = read_mapping([root / "mappings" / "sps.map"], system)
    flat, mflat = system.flat(), mapping.flat()
    spec = FeatureSpec(sorted(set(map(str, flat.types))), sorted(set(map(str, mflat.bead_types))), {})
    return Recipe(flat, mflat, spec), read_frame(d / "aa.gro"), read_frame(d / "cg.gro")


def _grids(recipe, centres, box, pos, atoms, angles, initial=False):
    state = build_state(recipe, GRID, centres, box, positions=pos)
    return featurize(recipe, GRID, state, atoms, initial, angles)


def test_sequences_cover_every_atom_once(sps):
    recipe, _, _ = sps
    seq = recipe.bead_seq[recipe.bead_seq >= 0]
    assert sorted(seq.tolist()) == list(range(recipe.n_atoms))
    # heavy atoms come before hydrogens in every bead
    for row in recipe.bead_seq:
        row = row[row >= 0]
        heavy = recipe.is_heavy[row]
        assert not np.any(np.diff(heavy.astype(int)) > 0)


def test_collapse_returns_the_point():
    r = torch.tensor([[0.0, 0.0, 0.0], [0.11, -0.07, 0.05], [-0.2, 0.15, 0.1]])
    back = collapse(density_of(r, GRID), GRID)
    assert torch.allclose(back, r, atol=2e-3)


def test_rotation_about_z_rotates_the_grid(sps):
    recipe, cg, pos = sps
    atoms = torch.from_numpy(recipe.bead_seq[:40, 2])
    a = _grids(recipe, cg.positions, cg.box, pos, atoms, torch.zeros(len(atoms)))
    b = _grids(recipe, cg.positions, cg.box, pos, atoms, torch.full((len(atoms),), math.pi / 2))
    # turning the environment by +90 degrees about z (angle pi/2) turns the grid by a quarter in x-y
    # (rot90 from the y axis towards x, i.e. k=-1 on dims (x, y))
    turned = torch.rot90(a.grid, k=-1, dims=(2, 3))
    assert a.grid.abs().sum() > 0
    assert torch.allclose(b.grid, turned, atol=1e-4)
    assert not torch.allclose(b.grid, a.grid, atol=1e-2)


def test_translation_and_periodic_images_leave_features_unchanged(sps):
    recipe, cg, pos = sps
    box = np.asarray(cg.box)
    atoms = torch.from_numpy(recipe.bead_seq[::7, 1])
    angles = torch.linspace(0, 6, len(atoms))
    ref = _grids(recipe, cg.positions, box, pos, atoms, angles)
    shift = np.array([1.3, -0.7, 2.2])
    moved = _grids(recipe, cg.positions + shift, box, pos + shift, atoms, angles)
    assert torch.allclose(ref.grid, moved.grid, atol=1e-4)
    # one molecule split across the box: its atoms and beads moved by box vectors
    pos2 = pos.copy()
    mol0 = recipe.atom_mol == 0
    pos2[mol0] += box[0] - box[2]
    cen2 = np.array(cg.positions, copy=True)
    cen2[recipe.bead_mol == 0] -= box[1]
    split = _grids(recipe, cen2, box, pos2, atoms, angles)
    assert torch.allclose(ref.grid, split.grid, atol=1e-4)


def test_batched_features_equal_one_at_a_time(sps):
    recipe, cg, pos = sps
    atoms = torch.from_numpy(recipe.bead_seq[:6, 3])
    angles = torch.linspace(0, 3, 6)
    batch = _grids(recipe, cg.positions, cg.box, pos, atoms, angles, initial=True)
    for k in range(6):
        one = _grids(recipe, cg.positions, cg.box, pos, atoms[k:k + 1], angles[k:k + 1], initial=True)
        assert torch.allclose(one.grid[0], batch.grid[k], atol=1e-5)


def test_absent_atoms_are_not_in_the_environment(sps):
    recipe, cg, pos = sps
    atoms = torch.from_numpy(recipe.bead_seq[:10, 0])       # first atom of each bead
    state = build_state(recipe, GRID, cg.positions, cg.box)   # nothing placed yet
    batch = featurize(recipe, GRID, state, atoms, True, torch.zeros(10))
    T = recipe.spec.n_atom_types
    assert float(batch.grid[:, :T * 4 + 1].abs().max()) == 0.0   # no atom channels at all
    assert float(batch.grid[:, T * 4 + 1:].abs().max()) > 0.1    # beads are always there


def test_prior_gradients_reach_generator_weights(sps):
    recipe, cg, pos = sps
    torch.manual_seed(0)
    atoms = torch.from_numpy(recipe.bead_seq[:16, 1])
    batch = _grids(recipe, cg.positions, cg.box, pos, atoms, torch.zeros(16), initial=True)
    gen = Generator(recipe.spec.n_channels, recipe.spec.n_atom_types, 8, 8, 1, 8)
    dens = gen(batch.grid, batch.atom_type, torch.randn(16, 8))
    rel = batch.to_rel(collapse(dens, GRID))
    e = prior_energy(batch, rel)
    loss = sum(v.mean() for v in e.values())
    loss.backward()
    grads = [p.grad.abs().sum() for p in gen.parameters() if p.grad is not None]
    assert grads and float(sum(grads)) > 0
    assert torch.isfinite(loss)


def test_prior_energy_of_a_relaxed_structure_is_lower_than_of_a_perturbed_one(sps3):
    """On the project's relaxed sPS chains (tests/data/sps3), the energy prior of the true atom positions
    is far below that of the same atoms moved by 0.03 nm: bonds, angles, dihedrals and LJ all see it."""
    recipe, aa, cg = sps3
    atoms = torch.from_numpy(recipe.bead_seq[:, 2])          # the third atom of every bead
    batch = _grids(recipe, cg.positions, cg.box, aa.positions, atoms, torch.zeros(len(atoms)))
    centre = torch.as_tensor(cg.positions, dtype=torch.float32)[batch.beads]
    from gmx_dbm.ff.geometry import minimum_image_one_box
    true_rel = minimum_image_one_box(torch.as_tensor(aa.positions, dtype=torch.float32)[atoms] - centre,
                                     torch.as_tensor(cg.box, dtype=torch.float32))
    step = torch.randn(len(atoms), 3, generator=torch.Generator().manual_seed(1))
    moved = true_rel + 0.03 * step / step.norm(dim=1, keepdim=True)
    e_true, e_moved = prior_energy(batch, true_rel), prior_energy(batch, moved)
    for term in ("bond", "angle", "dihedral"):   # measured: 0.001 -> 2.4, 4.0 -> 16.9, 1.9 -> 13.2 kJ/mol
        assert float(e_moved[term].mean()) > 3 * float(e_true[term].mean()) + 1.0, term
    assert float(e_moved["lj"].mean()) > float(e_true["lj"].mean()) + 1.0   # -1.8 -> +0.4


def test_critic_and_generator_shapes():
    gen = Generator(7, 3, 8, 8, 1, 4)
    critic = Critic(7, 3, 8, 8, 1)
    cond = torch.randn(5, 7, 8, 8, 8)
    at = torch.tensor([0, 1, 2, 0, 1])
    d = gen(cond, at, torch.randn(5, 4))
    assert d.shape == (5, 1, 8, 8, 8)
    assert torch.allclose(d.sum(dim=(1, 2, 3, 4)), torch.full((5,), gen.mass), rtol=1e-4)
    assert critic(cond, at, d).shape == (5,)


def test_group_norm_on_channels_last_input_equals_torchs():
    """The channels-last path of ``GroupNorm`` (the backmapper runs the generator channels-last) gives
    torch's values and gradients, and keeps the memory format."""
    torch.manual_seed(0)
    ref = torch.nn.GroupNorm(4, 8)
    ours = GroupNorm(4, 8)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    x = (3.0 * torch.randn(5, 8, 4, 4, 4) + 1.5).requires_grad_(True)
    xl = x.detach().to(memory_format=torch.channels_last_3d).requires_grad_(True)
    assert not xl.is_contiguous()
    y_ref, y = ref(x), ours(xl)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(y, y_ref, atol=1e-5)
    w = torch.randn_like(y_ref)
    (g_ref,) = torch.autograd.grad((y_ref * w).sum(), x)
    (g,) = torch.autograd.grad((y * w).sum(), xl)
    assert torch.allclose(g, g_ref, atol=1e-4)
    assert torch.equal(ours(x), ref(x))     # contiguous input: torch's own kernel


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(3)
    gen = Generator(7, 3, 8, 8, 1, 4).eval()
    meta = {"name": "t", "spec": {"atom_types": ["A"], "bead_types": ["B"], "bead_type_alias": {}},
            "grid": {"resolution": 8, "length": 1.2, "sigma": 0.1, "cutoff": 0.7}}
    path = tmp_path / "m.safetensors"
    save_model(path, gen, meta)
    back, meta2 = load_model(path)
    x = torch.randn(2, 7, 8, 8, 8)
    z = torch.randn(2, 4)
    at = torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(gen(x, at, z), back(x, at, z))
    assert meta2["name"] == "t" and meta2["grid"]["resolution"] == 8
    # a truncated file is refused with a clear error
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError):
        load_model(bad)


def test_training_checkpoint_refuses_pickled_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ModelFileError):
        load_checkpoint(path)
    assert not marker.exists()


def test_p1_and_p2_prior_losses(sps3):
    """p1 minimises the prior energy of generated atoms; p2 matches the reference's: on the true positions
    p2's loss is zero and p1's is not, and moving the atoms raises both. The weight ramps up linearly."""
    from gmx_dbm.train.config import Config, PriorConfig
    from gmx_dbm.train.loop import prior_loss, prior_weight
    recipe, aa, cg = sps3
    atoms = torch.from_numpy(recipe.bead_seq[:, 1])
    batch = _grids(recipe, cg.positions, cg.box, aa.positions, atoms, torch.zeros(len(atoms)))
    from gmx_dbm.ff.geometry import minimum_image_one_box
    real = minimum_image_one_box(torch.as_tensor(aa.positions, dtype=torch.float32)[atoms]
                                 - torch.as_tensor(cg.positions, dtype=torch.float32)[batch.beads],
                                 torch.as_tensor(cg.box, dtype=torch.float32))
    moved = real + 0.03
    losses = {}
    for mode in ("p1", "p2"):
        cfg = Config(name="p", output="unused", data=[], prior=PriorConfig(mode=mode, ramp_start=10, ramp_steps=100))
        assert prior_weight(cfg, 5) == 0.0 and prior_weight(cfg, 59) == pytest.approx(0.5)
        assert prior_weight(cfg, 1000) == 1.0
        losses[mode] = [float(prior_loss(cfg, batch, x, real, 1.0)[0]) for x in (real, moved)]
    assert losses["p2"][0] == pytest.approx(0.0, abs=1e-6) and losses["p2"][1] > 0.01
    assert losses["p1"][1] > losses["p1"][0] + 0.01 and losses["p1"][0] != 0.0
    assert prior_weight(Config(name="p", output="unused", data=[], prior=PriorConfig(mode="none")), 1000) == 0.0


def test_generator_only_runs_take_the_cards_settings_without_md():
    """``--md-steps 0`` switches the defaults to the card's generator-only settings; explicit options win,
    and a card without them keeps its one set."""
    from gmx_dbm.backmap.settings import SamplerSettings
    from gmx_dbm.model.card import ModelCard
    card = ModelCard.from_meta({"card": {"sampler": {"gibbs": 4, "proposals": 1, "md_steps": 300},
                                         "sampler_without_md": {"proposals": 16, "md_steps": 5}}})
    assert card.sampler_without_md == {"proposals": 16}        # md_steps is the switch, not a setting
    default = SamplerSettings.resolve(card)
    assert (default.proposals, default.md_steps, default.gibbs) == (1, 300, 4)
    off = SamplerSettings.resolve(card, md_steps=0)
    assert (off.proposals, off.md_steps, off.gibbs) == (16, 0, 4)
    assert SamplerSettings.resolve(card, md_steps=0, proposals=2).proposals == 2
    assert SamplerSettings.resolve(card, md_steps=100).proposals == 1
    plain = ModelCard.from_meta({"card": {"sampler": {"proposals": 3}}})
    assert SamplerSettings.resolve(plain, md_steps=0).proposals == 3
    # a card whose own default is no thermalisation uses its generator-only settings from the start
    card0 = ModelCard.from_meta({"card": {"sampler": {"md_steps": 0}, "sampler_without_md": {"gibbs": 8}}})
    assert SamplerSettings.resolve(card0).gibbs == 8
