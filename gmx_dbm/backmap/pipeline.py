"""``Backmapper``: the model, the system's tables and the chain of steps for one system, built once."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError, TrajectoryError
from ..io import check_names, read_frames
from ..model.card import ModelCard
from ..model.checkpoint import load_model, read_model_meta
from ..model.recipe import FeatureSpec, Recipe
from ..voxel import GridSpec
from . import steps as S
from .models import model_fits, resolve_model
from .run_parameters import RunParameters, describe_nonbonded
from .settings import SamplerSettings

log = logging.getLogger(__name__)


class Backmapper:
    """Everything needed to backmap frames of one system; build once (``build``), call ``frame`` per CG
    frame. ``steps`` is the chain run on every frame."""

    def __init__(self, models: S.Models, meta: dict, card: ModelCard, settings: SamplerSettings, flat, mflat,
                 steps: list, stereo_targets=None, dynamics=None, model_path=None, device=None):
        self.models = models
        self.meta, self.card, self.settings = meta, card, settings
        self.flat, self.mflat = flat, mflat
        self.steps = steps
        self.stereo_targets = stereo_targets
        self.dynamics = dynamics
        self.model_path = model_path
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.timings = {}   # step name -> seconds, summed over the frames this process computed

    # convenience views used by callers and tests
    generator = property(lambda self: self.models.generator)
    recipe = property(lambda self: self.models.recipe)
    grid = property(lambda self: self.models.grid)
    md_steps = property(lambda self: self.settings.md_steps)
    temperature = property(lambda self: self.settings.temperature)
    constraints = property(lambda self: self.settings.constraints)

    @classmethod
    def build(cls, system, mapping, model=None, *, constraints: str = "auto", seed: int = 0, device="cpu",
              temperature: float | None = None, stereo="auto", mdp=None, precision: str = "fp32",
              **sampler) -> "Backmapper":
        """``sampler``: gibbs, orientations, proposals, proposal_sweeps, select_temperature, md_steps (None:
        the model card's). ``stereo``: 'auto' (the model card's handedness table), 'none', or all-atom
        frames of this system (a path: .gro/.pdb/.xtc in topology order) to take the handedness from.
        ``mdp``: the user's GROMACS run parameters (a path, ``MdpFile`` or ``RunParameters``): constraints
        and ref-t where ``constraints``/``temperature`` are not given, and the force field's cut-offs and
        electrostatics (``run_parameters``). ``device``: cpu, cuda, cuda:N or a ``torch.device``: every
        step runs there (``devices.resolve_device``). ``precision``: fp32, or bf16/fp16 autocast for the
        generator's network only (the sampler, energies and dynamics stay in float32)."""
        from ..devices import resolve_device
        dev = device if isinstance(device, torch.device) else resolve_device(device, where="--device")
        params = None if mdp is None else RunParameters.read(mdp)
        flat = system.flat()
        mflat = mapping.flat()
        path = resolve_model(model, mapping)
        meta = read_model_meta(path)
        why = model_fits(meta, mapping)
        if why is not None:
            raise ModelFileError(f"model cannot backmap this system: {why}", path=path)
        gen, meta = load_model(path, device=dev)
        gen = gen.to(memory_format=torch.channels_last_3d)  # ~12% faster 3D convolutions on the CPU
        gen = with_precision(gen, precision, dev)
        card = ModelCard.from_meta(meta)
        settings = SamplerSettings.resolve(card, constraints=constraints, temperature=temperature, seed=seed,
                                           mdp=params, **sampler)
        g = meta["grid"]
        models = S.Models(gen, Recipe(flat, mflat, FeatureSpec.from_dict(meta["spec"])),
                          GridSpec(g["resolution"], g["length"], g["sigma"], g["cutoff"]))
        s = settings
        log.info("model %s (%s), %d Gibbs sweeps, %d orientations (selection at %g K), constraints %s (%s), "
                 "%d MD steps at %g K (%s)", path.name, meta.get("name"), s.gibbs, s.orientations,
                 s.select_temperature, s.constraints, s.sources["constraints"], s.md_steps, s.temperature,
                 s.sources["temperature"])
        if s.forcefield is not None:
            log.info("force field of the thermalisation and the candidate energies from %s: %s",
                     s.sources["forcefield"], describe_nonbonded(s.forcefield))
        from ..stereo import find_centres
        ch_centres = find_centres(flat)
        targets = _stereo_targets(stereo, flat, card, ch_centres, path, mflat)

        projector = None
        chain = [S.Generate(models, s)]
        if s.constraints != "none":
            projector = S.ProjectBonds(flat, *S.constraint_arrays(flat, s.constraints), device=dev)
            chain.append(projector)
        defects = S.RedrawDefects(models, flat, projector)
        chain.append(defects)
        # after the projection and the redraws: projecting a distorted frame onto the bond lengths can
        # itself invert centres, and a redrawn bead can leave a hydrogen on the wrong side
        if len(ch_centres):
            chain.append(S.RepairStereo(models, ch_centres, targets, projector, defects))
        dynamics = None
        if s.md_steps:
            from ..ff.dynamics import RestrainedLangevin
            bonds, lengths = (projector.bonds, projector.lengths) if projector is not None else (None, None)
            chiral = None
            if targets is not None and len(targets.centres):
                chiral = (targets.centres, np.ones(len(targets.centres), dtype=np.int64))   # set per frame
            dynamics = RestrainedLangevin(flat, mflat.centre, s.temperature, s.md_steps, bonds=bonds,
                                          lengths=lengths, chiral=chiral, hydrogens=ch_centres,
                                          nonbonded=s.forcefield, device=dev)
            chain.append(S.Thermalise(dynamics, targets))   # holds the constrained bonds itself: no polish
        elif projector is not None and s.proposals > 1:
            chain.append(S.Polish(models, s, projector))
        chain.append(S.Wrap())
        log.info("device %s%s", dev, "" if precision == "fp32" else f", generator in {precision}")
        return cls(models, meta, card, settings, flat, mflat, chain, targets, dynamics, path, dev)

    @torch.no_grad()
    def frame(self, centres: np.ndarray, box: np.ndarray, index: int = 0) -> np.ndarray:
        """Positions (N, 3) nm, wrapped into the box, for one CG frame (bead centres (nb, 3))."""
        rng = torch.Generator(device=self.device).manual_seed(self.settings.seed * 1_000_003 + index)
        work = S.FrameWork(index, np.asarray(centres), np.asarray(box, dtype=np.float64), rng, self.device)
        for step in self.steps:
            t0 = time.perf_counter()
            step(work)
            if self.device.type == "cuda":   # a step's time includes its queued kernels
                torch.cuda.synchronize(self.device)
            name = type(step).__name__
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        return work.positions


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class AutocastGenerator(torch.nn.Module):
    """The generator's network under ``torch.autocast`` in a lower precision; densities come back in
    float32, so everything after the network is unchanged."""

    def __init__(self, generator: torch.nn.Module, dtype, device_type: str):
        super().__init__()
        self.inner = generator
        self.dtype, self.device_type = dtype, device_type
        self.noise_dim = generator.noise_dim

    def forward(self, *args):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.inner(*args)
        return out.float()


def with_precision(generator, precision: str, device):
    """``generator`` as it is (fp32) or wrapped in ``AutocastGenerator`` (bf16, fp16)."""
    from ..errors import InputError
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", where="--precision")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return generator
    if dtype is torch.float16 and torch.device(device).type == "cpu":
        raise InputError("fp16 autocast needs a CUDA device; on the CPU use bf16", where="--precision")
    return AutocastGenerator(generator, dtype, torch.device(device).type)


def _stereo_targets(stereo, flat, card: ModelCard, ch_centres, model_path, mflat=None):
    """The handedness targets (``stereo.FixedTargets`` / ``stereo.PatternTargets``), or None. 'auto': the
    model card's tacticity pattern (any chain length), else its table of centres (its training molecules)."""
    from .. import stereo as st
    if stereo is None or str(stereo) == "none":
        return None
    if str(stereo) == "auto":
        source = f"model {Path(model_path).name}"
        if card.tacticity.get("counts"):
            return _pattern_targets(flat, card.tacticity, source, mflat)
        table = card.stereo
    else:
        frames = list(read_frames(stereo))
        if frames and frames[0].n_atoms != flat.n_atoms:
            raise TrajectoryError(f"{frames[0].n_atoms} atoms, expected {flat.n_atoms} (the topology's; a "
                                  "stereo template is an all-atom structure of this system)", path=stereo)
        for k, f in enumerate(frames):
            check_names(f, flat.names, stereo, k, "atom", "the topology")
        table = st.learn(flat, ((f.positions, f.box) for f in frames), ch_centres)
        source = str(stereo)
    centres, signs = st.targets(flat, table, ch_centres)
    log.info("handedness of %d tetrahedral centres fixed (from %s)", len(signs), source)
    return st.FixedTargets(centres, signs)


def _pattern_targets(flat, tacticity: dict, source: str, mflat=None):
    from .. import stereo as st
    chain = st.ChainCentres(flat)
    relations = tacticity.get("relations") or st.tacticity_relations(tacticity.get("counts", {}))
    agree, disagree = tacticity.get("cg", (0, 0))
    triples, cg_sign = None, 0
    if mflat is not None and agree != disagree:
        triples = st.cg_triples(chain.centres, mflat.atom_bead, mflat.bead_types, mflat.cg_bonds)
        cg_sign = 1 if agree > disagree else -1
    targets = st.PatternTargets(chain, relations, triples, cg_sign)
    if not relations:
        log.warning("%s: its training data has no uniform tacticity (%s): the handedness of tetrahedral "
                    "centres is not enforced", source, st.describe_tacticity(tacticity))
        return None
    left = len(chain.centres) - len(targets.centres)
    log.info("tacticity pattern from %s, %s: handedness of %d of %d tetrahedral centres in %d chain(s) "
             "enforced; each chain's absolute handedness follows the generated frame", source,
             st.describe_tacticity(tacticity), len(targets.centres), len(chain.centres), targets.n_chains)
    if left:
        log.warning("%d tetrahedral centre(s) not covered by the tacticity pattern (pairs of centres unlike "
                    "any in the training data, or an inconsistent ring of centres): not enforced", left)
    return targets
