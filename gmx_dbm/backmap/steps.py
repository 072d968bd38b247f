"""The steps of backmapping one CG frame, each a small object with one method ``__call__(work)``.

``Backmapper`` (``pipeline``) chains them: generate → project bonds → redraw defects → stereo repair →
thermalise (or polish) → wrap. A setting that switches a part off drops its step (``--md-steps 0``
drops the thermalisation, ``--constraints none`` the projection, ``--no-stereo`` the handedness part
of the stereo repair).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry import wrap
from ..model.features import FrameState, build_state
from ..model.sampler import constrain_bonds, generate_frame, regenerate_beads, sweep_pass

log = logging.getLogger(__name__)

# atoms per generator call: per-sample cost doubles above ~1000 on a 2-core CPU (activations leave the
# cache; measured 0.28 ms at 512, 0.56 ms at 2880; one thread: 0.87 ms at 512, 1.52 ms at 1024) and memory
# grows with it; linear in atoms this way. An accelerator needs large batches to be busy
INFERENCE_CHUNK = 512
INFERENCE_CHUNK_ACCELERATOR = 8192


def inference_chunk(device) -> int:
    """Atoms per generator call on ``device``."""
    return INFERENCE_CHUNK if torch.device(device).type == "cpu" else INFERENCE_CHUNK_ACCELERATOR


# rounds of redrawing the beads of inverted tetrahedral centres before the rest are mirrored back
STEREO_REDRAWS = 4
# rounds of redrawing the beads of deformed rings and hidden clashes
DEFECT_REDRAWS = 3
# bond energies weigh this much more in the choice among candidates when bonds are constrained afterwards
STIFF_BONDS = 20.0
POLISH_SWEEPS = 4
POLISH_STEP = 0.005  # nm


@dataclass
class FrameWork:
    """One frame on its way through the steps."""
    index: int
    centres: np.ndarray          # (nb, 3) bead centres, nm
    box: np.ndarray              # (3, 3)
    rng: torch.Generator         # on ``device``
    device: torch.device = torch.device("cpu")
    state: FrameState | None = None
    positions: torch.Tensor | None = None   # (N, 3) float32, unwrapped around their beads
    stereo_signs: np.ndarray | None = None  # this frame's handedness targets (``RepairStereo``)
    log: dict = field(default_factory=dict)

    def host_positions(self) -> np.ndarray:
        """The positions as float64 numpy (for the steps written in numpy: stereo, structure checks)."""
        return self.positions.detach().cpu().double().numpy()

    def set_positions(self, x: np.ndarray) -> None:
        self.positions = self.state.positions = torch.from_numpy(x).float().to(self.device)


@dataclass
class Models:
    """What the generating steps share: the generator and the system's generation tables."""
    generator: torch.nn.Module
    recipe: object
    grid: object


class Generate:
    """Initial autoregressive pass + Gibbs sweeps (``sampler.generate_frame``)."""

    def __init__(self, models: Models, settings):
        self.m, self.s = models, settings

    def __call__(self, w: FrameWork) -> None:
        t0 = time.perf_counter()
        w.state = build_state(self.m.recipe, self.m.grid, w.centres, w.box, device=w.device)
        s = self.s
        w.positions = generate_frame(self.m.generator, self.m.recipe, self.m.grid, w.state, w.rng, s.gibbs,
                                     s.orientations, chunk=inference_chunk(w.device), temperature=s.select_temperature,
                                     proposals=s.proposals, proposal_sweeps=s.proposal_sweeps,
                                     lj_cutoff=s.prior_lj_cutoff)
        w.log["generate_s"] = time.perf_counter() - t0


class ProjectBonds:
    """Constrained bonds onto their topology lengths (arrays built once per system)."""

    def __init__(self, flat, bonds: torch.Tensor, lengths: torch.Tensor, device=None):
        dev = torch.device("cpu") if device is None else torch.device(device)
        self.bonds, self.lengths = bonds.to(dev), lengths.to(dev)
        self.masses = torch.from_numpy(flat.masses).float().to(dev)

    def project(self, positions: torch.Tensor, box) -> torch.Tensor:
        return constrain_bonds(positions, torch.as_tensor(box, dtype=torch.float32, device=positions.device),
                               self.bonds, self.lengths, self.masses)

    def __call__(self, w: FrameWork) -> None:
        w.positions = self.project(w.positions, w.box)
        w.state.positions = w.positions


def constraint_arrays(flat, constraints: str) -> tuple:
    """(bonds (m, 2) int64, lengths (m,) float32) of the bonds held at their lengths."""
    idx, lengths = flat.bond_list()
    if constraints == "h-bonds":
        heavy = flat.is_heavy
        keep = ~(heavy[idx[:, 0]] & heavy[idx[:, 1]])
        idx, lengths = idx[keep], lengths[keep]
    return torch.from_numpy(idx), torch.from_numpy(lengths).float()


def _redraw(models: Models, w: FrameWork, beads, projector) -> None:
    w.state.positions = w.positions
    regenerate_beads(models.generator, models.recipe, models.grid, w.state,
                     torch.as_tensor(np.asarray(beads), device=w.device), w.rng,
                     chunk=inference_chunk(w.device))
    w.positions = w.state.positions if projector is None else projector.project(w.state.positions, w.box)
    w.state.positions = w.positions


class RepairStereo:
    """Tetrahedral CH centres: hydrogens left on their heavy neighbours' side go opposite them (always);
    with handedness targets (``stereo.FixedTargets`` from a table or template, ``stereo.PatternTargets``
    from a tacticity pattern, decided here from the generated frame), centres of the wrong handedness get
    their beads redrawn by the generator (new noise, every other atom present; up to STEREO_REDRAWS
    rounds, the later ones redrawing the beads of the centre's neighbours too), and the few left are
    mirrored back (``stereo.repair``). A redrawn bead can come out with a deformed ring or a hidden clash
    (measured: 2 of 8 frames of an sPS melt of 3-, 6- and 10-mers had a deformed ring after the stereo
    redraws, none before them); ``defects`` (a ``RedrawDefects``) redraws those after every round."""

    def __init__(self, models: Models, ch_centres, targets=None, projector=None, defects=None):
        self.m = models
        self.ch_centres = ch_centres
        self.targets = targets
        self.projector = projector
        self.defects = defects

    def __call__(self, w: FrameWork) -> None:
        from ..stereo import handedness, place_hydrogens, repair
        box64 = np.asarray(w.box, dtype=np.float64)
        x, n_h = place_hydrogens(w.host_positions(), box64, self.ch_centres)
        if self.targets is None or not len(self.targets.centres):
            log.info("frame %d: %d of %d CH hydrogens moved off their heavy neighbours' side", w.index, n_h,
                     len(self.ch_centres))
            w.set_positions(x)
            return
        cen = self.targets.centres
        signs = w.stereo_signs = self.targets.signs(x, box64, beads=w.centres)
        wrong = handedness(x, box64, cen) != signs
        first = int(wrong.sum())
        for attempt in range(STEREO_REDRAWS):
            if not wrong.any():
                break
            cols = [0] if attempt < STEREO_REDRAWS // 2 else [0, 1, 2, 3]
            w.set_positions(x)
            _redraw(self.m, w, self.m.recipe.atom_bead[cen[wrong][:, cols].ravel()], self.projector)
            if self.defects is not None:
                self.defects(w)
            x, moved = place_hydrogens(w.host_positions(), box64, self.ch_centres)
            n_h += moved
            wrong = handedness(x, box64, cen) != signs
        x, n_inv = repair(x, box64, cen, signs)
        w.log["stereo_inverted"] = first
        log.info("frame %d: %d CH hydrogens moved off their heavy neighbours' side; %d of %d centres came out "
                 "inverted, %d after redrawing their beads (mirrored back)", w.index, n_h, first, len(signs), n_inv)
        w.set_positions(x)


class RedrawDefects:
    """Beads with a deformed ring or with a clash the force field excludes (so that the thermalisation
    cannot separate it) are redrawn by the generator, up to DEFECT_REDRAWS rounds
    (``quality.StructureChecks``)."""

    def __init__(self, models: Models, flat, projector=None):
        from ..quality import StructureChecks, exclusion_keys
        self.m = models
        self.checks = StructureChecks(flat)
        self.excluded = exclusion_keys(flat)
        self.projector = projector

    def __call__(self, w: FrameWork) -> None:
        first = None
        for _ in range(DEFECT_REDRAWS + 1):
            atoms = self.checks.atoms_to_redraw(w.host_positions(), w.box, self.excluded)
            if first is None:
                first = len(atoms)
            if not len(atoms):
                break
            if _ == DEFECT_REDRAWS:
                break
            _redraw(self.m, w, np.unique(self.m.recipe.atom_bead[atoms]), self.projector)
        if first:
            log.info("frame %d: %d atoms in deformed rings or hidden clashes, %d after redrawing their beads",
                     w.index, first, len(atoms))
        w.log["defect_atoms"] = int(len(atoms))   # after the last call (the stereo repair calls it again)


# steps of thermalisation after mirroring back a centre that the dynamics inverted
SETTLE_STEPS = 30


class Thermalise:
    """Restrained Langevin dynamics in the force field (``ff.dynamics.RestrainedLangevin``). A centre
    whose handedness is enforced but that comes out of the run inverted anyway (a nearly flat centre
    crossing its neighbours' plane; measured: 1 of 27 on three sPS chains) is mirrored back
    (``stereo.repair``) and the frame gets SETTLE_STEPS more steps, so that the mirrored atoms settle."""

    def __init__(self, dynamics, targets=None):
        self.dynamics = dynamics
        self.targets = targets

    def __call__(self, w: FrameWork) -> None:
        t0 = time.perf_counter()
        signs = w.stereo_signs
        x = self.dynamics.run(w.positions, w.box, w.centres, w.rng, chiral_signs=signs)
        if signs is not None and len(signs):
            from ..stereo import repair
            x, n_inv = repair(x, np.asarray(w.box, dtype=np.float64), self.targets.centres, signs)
            if n_inv:
                log.info("frame %d: %d centres inverted during the thermalisation, mirrored back and settled "
                         "(%d steps)", w.index, n_inv, SETTLE_STEPS)
                x = self.dynamics.run(torch.from_numpy(x), w.box, w.centres, w.rng, steps=SETTLE_STEPS,
                                      chiral_signs=signs)
        w.positions = torch.from_numpy(x)
        w.log["thermalise_s"] = time.perf_counter() - t0
        log.info("frame %d: generated in %.1f s, thermalised (%d steps, %d pair searches, %d Verlet-list "
                 "prunes) in %.1f s", w.index, w.log.get("generate_s", 0.0), self.dynamics.steps,
                 self.dynamics.last_rebuilds, self.dynamics.last_prunes, w.log["thermalise_s"])


class Polish:
    """Without thermalisation but with constrained bonds and several proposals: sweeps with stiff bonds
    and small local moves, each followed by a projection, repair the angles the projection bent."""

    def __init__(self, models: Models, settings, projector: ProjectBonds):
        self.m, self.s, self.projector = models, settings, projector

    def __call__(self, w: FrameWork) -> None:
        s = self.s
        for _ in range(POLISH_SWEEPS):
            sweep_pass(self.m.generator, self.m.recipe, self.m.grid, w.state, w.rng, False, s.orientations,
                       inference_chunk(w.device), temperature=s.select_temperature, proposals=s.proposals,
                       local_step=POLISH_STEP, bond_weight=STIFF_BONDS, lj_cutoff=s.prior_lj_cutoff)
            w.state.positions = self.projector.project(w.state.positions, w.box)
        w.positions = w.state.positions


class Wrap:
    """Every atom into the box (GROMACS' put_atoms_in_box)."""

    def __call__(self, w: FrameWork) -> None:
        w.positions = wrap(w.host_positions(), np.asarray(w.box, dtype=np.float64))
