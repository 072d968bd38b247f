"""The backmapping engine: CG frames + all-atom topology + mapping + model -> all-atom frames.

``backmap(...)`` streams frames (constant memory in the number of frames), generates all beads of all
molecules that are at the same step of their sequence in one batch, refines with Gibbs sweeps, optionally
projects bonds onto their constraint lengths, wraps into the box and writes every atom of the topology in
topology order. No all-atom reference is needed. Same inputs + same seed -> identical output.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import InputError, ModelFileError, TrajectoryError
from .geometry import wrap
from .io import AtomInfo, Frame, open_writer, read_frames
from .io.safe import check_writable
from .io.topology import read_topology
from .mapping import read_mapping
from .model.checkpoint import load_model, read_model_meta
from .model.features import build_state
from .model.recipe import FeatureSpec, Recipe
from .model.sampler import constrain_bonds, generate_frame, regenerate_beads, sweep_pass
from .voxel import GridSpec

log = logging.getLogger(__name__)

SHIPPED_MODELS = ("sps", "transfer")
# bond energies weigh this much more in the choice among candidates when bonds are constrained afterwards
STIFF_BONDS = 20.0
POLISH_SWEEPS = 4
POLISH_STEP = 0.005  # nm
# thermalisation (restrained Langevin dynamics in the force field) when the model card leaves it open;
# measured on the 453 K set: 300 steps of 4 fs take angle JSD 0.0088 -> 0.0005, LJ energy -646 -> -8142
MD_STEPS = 300
# atoms per generator call: per-sample cost doubles above ~1000 on a 2-core CPU (activations leave the
# cache; measured 0.28 ms at 512, 0.56 ms at 2880) and memory grows with it; linear in atoms this way
INFERENCE_CHUNK = 512
# rounds of redrawing the beads of inverted tetrahedral centres before the rest are mirrored back
STEREO_REDRAWS = 4
FALLBACK_TEMPERATURE = 300.0


def shipped_model_path(name: str) -> Path:
    return Path(str(resources.files("gmx_dbm") / "data" / "models" / f"{name}.safetensors"))


def _molecule_signatures(system) -> list:
    """Name + atom types of each used moleculetype: what a chemically specific model was trained on."""
    out = []
    for name, count in system.molecules:
        if count:
            mt = system.moleculetypes[name]
            out.append("|".join(mt.atom_attr("type")) + "#" + ",".join(f"{i}-{j}" for i, j in sorted(mt.graph.edges)))
    return sorted(set(out))


def model_fits(meta: dict, system, mflat) -> str | None:
    """None if the model can backmap this system, else the reason it cannot."""
    spec = FeatureSpec.from_dict(meta["spec"])
    types = sorted({t for name, c in system.molecules if c for t in system.moleculetypes[name].atom_attr("type")})
    missing = [t for t in types if t not in spec.atom_types]
    if missing:
        return f"atom types {', '.join(missing)} unknown to it (knows {', '.join(spec.atom_types)})"
    beads = sorted({str(b) for b in mflat.bead_types})
    missing = [b for b in beads if spec.bead_type_alias.get(b, b) not in spec.bead_types]
    if missing:
        return f"bead types {', '.join(missing)} unknown to it (knows {', '.join(spec.bead_types)})"
    sigs = meta.get("card", {}).get("molecules")
    if meta.get("card", {}).get("specific") and sigs and not set(_molecule_signatures(system)) <= set(sigs):
        return "it is chemically specific and was trained on other molecules"
    return None


def resolve_model(model, system, mflat) -> Path:
    """A path, a shipped model name, or None (the first shipped model that fits)."""
    if model is not None and (Path(model).suffix or Path(model).exists()):
        return Path(model)
    names = [model] if model else list(SHIPPED_MODELS)
    if model and model not in SHIPPED_MODELS:
        raise ModelFileError(f"unknown model {model!r}: give a .safetensors path or one of "
                             f"{', '.join(SHIPPED_MODELS)}")
    reasons = []
    for name in names:
        path = shipped_model_path(name)
        if not path.is_file():
            reasons.append(f"{name}: not installed")
            continue
        why = model_fits(read_model_meta(path), system, mflat)
        if why is None:
            return path
        reasons.append(f"{name}: {why}")
    raise ModelFileError("no shipped model fits this topology/mapping (" + "; ".join(reasons) +
                         "); train one with `gmx_dbm train` and pass --model PATH")


@dataclass
class Backmapper:
    """Everything needed to backmap frames of one system; build once, call ``frame`` per CG frame."""
    generator: torch.nn.Module
    recipe: Recipe
    grid: GridSpec
    meta: dict
    flat: object
    mflat: object
    gibbs: int = 4
    orientations: int = 1
    constraints: str = "none"
    seed: int = 0
    select_temperature: float = 0.0
    proposals: int = 1
    proposal_sweeps: int = 1
    md_steps: int = 0
    temperature: float = FALLBACK_TEMPERATURE
    dynamics: object = None
    stereo_centres: np.ndarray | None = None   # (k, 5) centres whose handedness is fixed, and the signs
    stereo_signs: np.ndarray | None = None
    ch_centres: np.ndarray | None = None      # (m, 5) every CH centre with three heavy neighbours
    temperature_note: str | None = None

    @classmethod
    def build(cls, system, mapping, model=None, gibbs=None, orientations=None, constraints="auto", seed=0,
              device="cpu", select_temperature=None, proposals=None, proposal_sweeps=None, md_steps=None,
              temperature=None, stereo="auto"):
        """``stereo``: 'auto' (the model card's handedness table), 'none', or all-atom frames of this
        system (a path: .gro/.pdb/.xtc in topology order) to take the handedness from."""
        flat = system.flat()
        mflat = mapping.flat()
        path = resolve_model(model, system, mflat)
        meta = read_model_meta(path)
        why = model_fits(meta, system, mflat)
        if why is not None:
            raise ModelFileError(f"model cannot backmap this system: {why}", path=path)
        gen, meta = load_model(path, device="cpu")
        gen = gen.to(memory_format=torch.channels_last_3d)  # ~12% faster 3D convolutions on the CPU
        if device != "cpu":
            log.warning("device %s requested: the sampler runs on the CPU in this build", device)
        spec = FeatureSpec.from_dict(meta["spec"])
        g = meta["grid"]
        grid = GridSpec(g["resolution"], g["length"], g["sigma"], g["cutoff"])
        if constraints == "auto":
            constraints = meta.get("card", {}).get("constraints", "none")
        if constraints not in ("none", "h-bonds", "all-bonds"):
            raise InputError(f"constraints must be none, h-bonds or all-bonds, got {constraints!r}")
        # sampler settings left open come from the model card (the measured ones), else the paper's
        card_sampler = meta.get("card", {}).get("sampler", {})
        defaults = {"gibbs": 4, "orientations": 1, "proposals": 1, "proposal_sweeps": 1, "select_temperature": 0.0,
                    "md_steps": MD_STEPS}
        given = {"gibbs": gibbs, "orientations": orientations, "proposals": proposals,
                 "proposal_sweeps": proposal_sweeps, "select_temperature": select_temperature,
                 "md_steps": md_steps}
        chosen = {k: (v if v is not None else card_sampler.get(k, defaults[k])) for k, v in given.items()}
        gibbs, orientations, proposals = chosen["gibbs"], chosen["orientations"], chosen["proposals"]
        proposal_sweeps, select_temperature = chosen["proposal_sweeps"], chosen["select_temperature"]
        md_steps = int(chosen["md_steps"])
        if md_steps < 0:
            raise InputError(f"MD steps must be 0 (off) or positive, got {md_steps}")
        note = None  # logged once the first CG frame has been checked (bad input: one error line only)
        if temperature is None:
            temperature = meta.get("card", {}).get("temperature")
            if md_steps and temperature is not None:
                note = (f"thermalising at {temperature:g} K, the temperature of the model's training data: give "
                        "your CG simulation's temperature with --temperature")
        if temperature is None:
            temperature = FALLBACK_TEMPERATURE
            if md_steps:
                note = f"thermalising at {temperature:g} K: give the CG simulation's temperature with --temperature"
        if not temperature > 0:
            raise InputError(f"temperature must be positive (kelvin), got {temperature}")
        log.info("model %s (%s), %d Gibbs sweeps, %d orientations (selection at %g K), constraints %s, "
                 "%d MD steps at %g K", path.name, meta.get("name"), gibbs, orientations, select_temperature,
                 constraints, md_steps, temperature)
        bm = cls(gen, Recipe(flat, mflat, spec), grid, meta, flat, mflat, int(gibbs), int(orientations),
                 constraints, int(seed), float(select_temperature), max(1, int(proposals)),
                 max(1, int(proposal_sweeps)), md_steps, float(temperature))
        bm.temperature_note = note
        from .stereo import find_centres
        bm.ch_centres = find_centres(flat)
        bm._set_stereo(stereo, path)
        if md_steps:
            from .ff.dynamics import RestrainedLangevin
            bonds, lengths = bm._constraint_arrays() if constraints != "none" else (None, None)
            chiral = (bm.stereo_centres, bm.stereo_signs) if bm.stereo_signs is not None else None
            bm.dynamics = RestrainedLangevin(flat, mflat.centre, bm.temperature, md_steps, bonds=bonds,
                                             lengths=lengths, chiral=chiral)
        return bm

    def _set_stereo(self, stereo, model_path) -> None:
        from . import stereo as st
        if stereo is None or str(stereo) == "none":
            return
        if str(stereo) == "auto":
            table = self.meta.get("card", {}).get("stereo") or {}
            source = f"model {Path(model_path).name}"
        else:
            frames = list(read_frames(stereo))
            if frames and frames[0].n_atoms != self.flat.n_atoms:
                raise TrajectoryError(f"{frames[0].n_atoms} atoms, expected {self.flat.n_atoms} (the topology's; a "
                                      "stereo template is an all-atom structure of this system)", path=stereo)
            table = st.learn(self.flat, ((f.positions, f.box) for f in frames), self.ch_centres)
            source = str(stereo)
        self.stereo_centres, self.stereo_signs = st.targets(self.flat, table, self.ch_centres)
        log.info("handedness of %d tetrahedral centres fixed (from %s)", len(self.stereo_signs), source)

    def _fix_centres(self, state, pos: torch.Tensor, box, index: int, rng: torch.Generator,
                     project=None) -> torch.Tensor:
        """Tetrahedral CH centres: hydrogens left on their heavy neighbours' side go opposite them
        (``stereo.place_hydrogens``, always); with a handedness table, centres of the wrong handedness
        get their beads redrawn by the generator (new noise, every other atom present; up to
        STEREO_REDRAWS rounds, the later ones redrawing the beads of the centre's neighbours too), and
        the few left are mirrored back (``stereo.repair``)."""
        from .stereo import handedness, place_hydrogens, repair
        if not len(self.ch_centres):
            return pos
        box64 = np.asarray(box, dtype=np.float64)
        x, n_h = place_hydrogens(pos.double().numpy(), box64, self.ch_centres)
        if self.stereo_signs is None or not len(self.stereo_signs):
            log.info("frame %d: %d of %d CH hydrogens moved off their heavy neighbours' side", index, n_h,
                     len(self.ch_centres))
            return torch.from_numpy(x).float()
        cen, signs = self.stereo_centres, self.stereo_signs
        wrong = handedness(x, box64, cen) != signs
        first = int(wrong.sum())
        for attempt in range(STEREO_REDRAWS):
            if not wrong.any():
                break
            cols = [0] if attempt < STEREO_REDRAWS // 2 else [0, 1, 2, 3]
            beads = torch.from_numpy(self.recipe.atom_bead[cen[wrong][:, cols].ravel()])
            state.positions = torch.from_numpy(x).float()
            regenerate_beads(self.generator, self.recipe, self.grid, state, beads, rng, chunk=INFERENCE_CHUNK)
            p = state.positions if project is None else project(state.positions)
            x, moved = place_hydrogens(p.double().numpy(), box64, self.ch_centres)
            n_h += moved
            wrong = handedness(x, box64, cen) != signs
        x, n_inv = repair(x, box64, cen, signs)
        log.info("frame %d: %d CH hydrogens moved off their heavy neighbours' side; %d of %d centres came out "
                 "inverted, %d after redrawing their beads (mirrored back)", index, n_h, first, len(signs), n_inv)
        return torch.from_numpy(x).float()

    def _constraint_arrays(self):
        idx, lengths = [], []
        for func, (i, p) in self.flat.bonded["bonds"].items():
            idx.append(i); lengths.append(p[:, 0])
        idx = np.concatenate(idx); lengths = np.concatenate(lengths)
        if self.constraints == "h-bonds":
            heavy = self.recipe.is_heavy
            keep = ~(heavy[idx[:, 0]] & heavy[idx[:, 1]])
            idx, lengths = idx[keep], lengths[keep]
        return torch.from_numpy(idx), torch.from_numpy(lengths).float()

    @torch.no_grad()
    def frame(self, centres: np.ndarray, box: np.ndarray, index: int = 0) -> np.ndarray:
        """Positions (N, 3) nm, wrapped into the box, for one CG frame (bead centres (nb, 3))."""
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        t_gen = time.perf_counter()
        state = build_state(self.recipe, self.grid, centres, box)
        # with constraints the sweeps run on flexible bonds (best angles), then bonds are projected onto
        # their lengths and polished: sweeps with stiff bonds and small local moves, each followed by a
        # projection, repair the angles the projection bent
        pos = generate_frame(self.generator, self.recipe, self.grid, state, rng, self.gibbs, self.orientations,
                             chunk=INFERENCE_CHUNK, temperature=self.select_temperature, proposals=self.proposals,
                             proposal_sweeps=self.proposal_sweeps)
        project = None
        if self.constraints != "none":
            bonds, lengths = self._constraint_arrays()
            masses = torch.from_numpy(self.flat.masses).float()

            def project(p):
                return constrain_bonds(p, state.box, bonds, lengths, masses)
            pos = project(pos)
        # after the projection: projecting a distorted frame onto the bond lengths can itself invert centres
        state.positions = pos = self._fix_centres(state, pos, box, index, rng, project)
        if self.dynamics is not None:
            # the dynamics hold the constrained bonds at their lengths themselves: no polish needed
            t_md = time.perf_counter()
            pos = torch.from_numpy(self.dynamics.run(pos, box, centres, rng))
            log.info("frame %d: generated in %.1f s, thermalised (%d steps, %d pair-list builds) in %.1f s", index,
                     t_md - t_gen, self.dynamics.steps, self.dynamics.last_rebuilds, time.perf_counter() - t_md)
        elif self.constraints != "none":
            for _ in range(POLISH_SWEEPS if self.proposals > 1 else 0):
                sweep_pass(self.generator, self.recipe, self.grid, state, rng, False, self.orientations,
                           INFERENCE_CHUNK, temperature=self.select_temperature, proposals=self.proposals,
                           local_step=POLISH_STEP, bond_weight=STIFF_BONDS)
                state.positions = constrain_bonds(state.positions, state.box, bonds, lengths, masses)
            pos = state.positions
        return wrap(pos.double().numpy(), np.asarray(box, dtype=np.float64))


def check_cg_frame(frame: Frame, mflat, path, index: int) -> None:
    """Bead count and, where the file names them, bead names must follow the topology + mapping."""
    if frame.n_atoms != mflat.n_beads:
        raise TrajectoryError(f"frame {index}: {frame.n_atoms} beads, expected {mflat.n_beads} "
                              "(from the topology's [ molecules ] and the mapping)", path=path)
    if frame.atoms is not None and len(mflat.bead_names):
        bad = np.nonzero(frame.atoms.names != mflat.bead_names)[0]
        if len(bad):
            b = int(bad[0])
            raise TrajectoryError(f"bead {b + 1} is named {str(frame.atoms.names[b])!r} but the mapping expects "
                                  f"{str(mflat.bead_names[b])!r} (bead order must follow the topology's molecules "
                                  "and the mapping)", path=path, where=f"frame {index}")


class FrameQuality:
    """Per-frame quality flags: after each generated frame, one INFO line with the clashes and the energy
    per term (kJ/mol per atom), and a WARNING for each term more than ``n_std`` standard deviations from
    the model card's ``reference_stats`` (when the card has them). About 0.5 s per 5832-atom frame."""

    def __init__(self, flat, card: dict | None = None, n_std: float = 5.0, skip_terms=()):
        from .ff.forcefield import ForceField
        self.flat = flat
        self.skip_terms = set(skip_terms)
        self.forcefield = ForceField(flat)
        self.stats = (card or {}).get("reference_stats")
        self.n_std = n_std
        if not self.stats:
            log.info("the model card has no reference statistics: frames are not checked against them")

    def __call__(self, index: int, positions, box) -> dict:
        from .evaluate import frame_report, quality_warnings
        rep = frame_report(self.flat, positions, box, self.forcefield)
        per_atom = " ".join(f"{k} {v:.4g}" for k, v in rep["energy_per_atom"].items())
        log.info("frame %d quality: %d clashes (< 0.1 nm); energy per atom (kJ/mol): %s", index, rep["clashes"], per_atom)
        for msg in quality_warnings(rep, self.stats, self.n_std):
            if msg.split(" ", 1)[0] not in self.skip_terms:
                log.warning("frame %d: %s", index, msg)
        return {"frame": index, "clashes": rep["clashes"], "energy": rep["energy"]}


def backmap(cg, topology, mapping, output, model=None, gibbs: int | None = None, orientations: int | None = None,
            seed: int = 0, constraints: str = "auto", defines=None, device: str = "cpu",
            progress: bool = True, frames=None, select_temperature: float | None = None,
            quality: bool = True, proposals: int | None = None, proposal_sweeps: int | None = None,
            md_steps: int | None = None, temperature: float | None = None, stereo="auto") -> dict:
    """Backmap every frame of ``cg`` (.gro/.xtc) to ``output`` (.gro/.xtc/.pdb). Returns a summary.
    Sampler settings left as None take the model card's measured defaults. ``md_steps``/``temperature``:
    thermalisation of each generated frame (restrained Langevin dynamics, ``ff.dynamics``) at the CG
    system's temperature; 0 steps switches it off. ``stereo``: handedness of tetrahedral centres from the
    model card ('auto', default), from all-atom frames of this system (a path), or not enforced ('none');
    centres that come out inverted have their beads redrawn (``Backmapper._fix_centres``). CH hydrogens
    left on their heavy neighbours' side are put opposite them in every case.
    ``quality``: log clashes and energies of every frame (``FrameQuality``); the summary's 'quality'."""
    check_writable(output)
    system = read_topology(topology, defines=defines)
    mapping_paths = [mapping] if isinstance(mapping, (str, Path)) else list(mapping)
    smap = read_mapping(mapping_paths, system)
    bm = Backmapper.build(system, smap, model, gibbs, orientations, constraints, seed, device, select_temperature,
                          proposals, proposal_sweeps, md_steps, temperature, stereo)
    atoms = AtomInfo.from_topology(bm.flat)
    # constrained bonds have (near) zero energy by construction: not a warning
    qc = FrameQuality(bm.flat, bm.meta.get("card"), skip_terms={"bond"} if bm.constraints != "none" else ()) \
        if quality else None
    reports = []
    t0 = time.perf_counter()
    n = 0
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    it = read_frames(cg, n_atoms=bm.mflat.n_beads)
    bar = tqdm(desc="backmap", unit="frame", disable=not progress) if tqdm else None
    try:
        with open_writer(output, atoms) as writer:
            for i, fr in enumerate(it):
                if frames is not None and i not in frames:
                    continue
                check_cg_frame(fr, bm.mflat, cg, i)
                if bm.temperature_note:
                    log.warning(bm.temperature_note)
                    bm.temperature_note = None
                tf = time.perf_counter()
                pos = bm.frame(fr.positions, fr.box, i)
                writer.write(Frame(pos, np.asarray(fr.box, dtype=np.float64), time=fr.time, step=fr.step))
                n += 1
                log.info("frame %d: %d atoms in %.1f s", i, len(pos), time.perf_counter() - tf)
                if qc is not None:
                    reports.append(qc(i, pos, fr.box))
                if bar is not None:
                    bar.update(1)
            if n == 0:
                raise TrajectoryError("contains no frames", path=cg)
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    summary = {"frames": n, "atoms": int(bm.flat.n_atoms), "seconds": dt,
               "atoms_per_s": n * bm.flat.n_atoms / dt if dt > 0 else float("inf"), "output": str(output),
               "md_steps": bm.md_steps, "temperature": bm.temperature}
    if qc is not None:
        summary["quality"] = reports
    log.info("wrote %s: %d frames, %.0f atoms/s", output, n, summary["atoms_per_s"])
    return summary
