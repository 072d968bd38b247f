"""The backmapping engine: CG frames + all-atom topology + mapping + model -> all-atom frames.

``backmap(...)`` streams frames (constant memory in the number of frames) through a ``Backmapper``: it
generates all beads of all molecules that are at the same step of their sequence in one batch, refines
with Gibbs sweeps, projects constrained bonds onto their lengths, redraws deformed rings, repairs
tetrahedral centres, thermalises the frame in the force field with every bead restrained to its CG position,
wraps into the box and writes every atom of the topology in topology order (``steps``). No all-atom
reference is needed. Same inputs + same seed -> identical output.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import TrajectoryError
from ..io import AtomInfo, Frame, check_names, open_writer, read_frames
from ..io.safe import check_writable
from ..topology import read_topology
from ..mapping import read_mapping
from ..quality import FrameQuality
from .models import SHIPPED_MODELS, model_fits, molecule_signatures, resolve_model, shipped_model_path
from .pipeline import Backmapper
from .run_parameters import RunParameters
from .settings import FALLBACK_TEMPERATURE, MD_STEPS, SamplerSettings
from .steps import INFERENCE_CHUNK

__all__ = ["backmap", "Backmapper", "SamplerSettings", "SHIPPED_MODELS", "shipped_model_path", "resolve_model",
           "model_fits", "molecule_signatures", "check_cg_frame", "INFERENCE_CHUNK", "MD_STEPS",
           "FALLBACK_TEMPERATURE", "RunParameters"]

log = logging.getLogger(__name__)


def check_cg_frame(frame: Frame, mflat, path, index: int) -> None:
    """Bead count and, where the file names them, bead names must follow the topology + mapping."""
    if frame.n_atoms != mflat.n_beads:
        raise TrajectoryError(f"frame {index}: {frame.n_atoms} beads, expected {mflat.n_beads} "
                              "(from the topology's [ molecules ] and the mapping)", path=path)
    check_names(frame, mflat.bead_names, path, index, "bead", "the mapping")


def backmap(cg, topology, mapping, output, model=None, gibbs: int | None = None, orientations: int | None = None,
            seed: int = 0, constraints: str = "auto", defines=None, device: str = "cpu",
            progress: bool = True, frames=None, select_temperature: float | None = None,
            quality: bool = True, proposals: int | None = None, proposal_sweeps: int | None = None,
            md_steps: int | None = None, temperature: float | None = None, stereo="auto", mdp=None) -> dict:
    """Backmap every frame of ``cg`` (.gro/.xtc) to ``output`` (.gro/.xtc/.pdb). Returns a summary.
    Sampler settings left as None take the model card's measured defaults. ``md_steps``/``temperature``:
    thermalisation of each generated frame (restrained Langevin dynamics, ``ff.dynamics``) at the CG
    system's temperature; 0 steps switches it off. ``stereo``: handedness of tetrahedral centres from the
    model card ('auto', default), from all-atom frames of this system (a path), or not enforced ('none');
    centres that come out inverted have their beads redrawn (``steps.RepairStereo``). CH hydrogens
    left on their heavy neighbours' side are put opposite them in every case.
    ``quality``: log clashes, deformed rings and energies of every frame (``quality.FrameQuality``); the
    summary's 'quality'. ``mdp``: the user's GROMACS run parameters (.mdp path; ``RunParameters``):
    constraints and ref-t where ``constraints`` is 'auto' and ``temperature`` None, and the cut-offs and
    electrostatics of the thermalisation's force field; the summary's 'sources' says where constraints,
    temperature and force field came from."""
    check_writable(output)
    params = None if mdp is None else RunParameters.read(mdp)   # a bad file fails before the model loads
    system = read_topology(topology, defines=defines)
    mapping_paths = [mapping] if isinstance(mapping, (str, Path)) else list(mapping)
    smap = read_mapping(mapping_paths, system)
    bm = Backmapper.build(system, smap, model, constraints=constraints, seed=seed, device=device,
                          temperature=temperature, stereo=stereo, gibbs=gibbs, orientations=orientations,
                          proposals=proposals, proposal_sweeps=proposal_sweeps,
                          select_temperature=select_temperature, md_steps=md_steps, mdp=params)
    atoms = AtomInfo.from_topology(bm.flat)
    # constrained bonds have (near) zero energy by construction: not a warning
    qc = FrameQuality(bm.flat, bm.card.reference_stats, skip_terms={"bond"} if bm.constraints != "none" else ()) \
        if quality else None
    reports = []
    t0 = time.perf_counter()
    n = 0
    from tqdm import tqdm
    note = bm.settings.temperature_note
    bar = tqdm(desc="backmap", unit="frame", disable=not progress)
    try:
        with open_writer(output, atoms) as writer:
            for i, fr in enumerate(read_frames(cg, n_atoms=bm.mflat.n_beads)):
                if frames is not None and i not in frames:
                    continue
                check_cg_frame(fr, bm.mflat, cg, i)
                if note:   # after the first frame is checked: bad input gives one error line only
                    log.warning(note)
                    note = None
                tf = time.perf_counter()
                pos = bm.frame(fr.positions, fr.box, i)
                writer.write(Frame(pos, np.asarray(fr.box, dtype=np.float64), time=fr.time, step=fr.step))
                n += 1
                log.info("frame %d: %d atoms in %.1f s", i, len(pos), time.perf_counter() - tf)
                if qc is not None:
                    reports.append(qc(i, pos, fr.box))
                bar.update(1)
            if n == 0:
                raise TrajectoryError("contains no frames", path=cg)
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    summary = {"frames": n, "atoms": int(bm.flat.n_atoms), "seconds": dt,
               "atoms_per_s": n * bm.flat.n_atoms / dt if dt > 0 else float("inf"), "output": str(output),
               "md_steps": bm.md_steps, "temperature": bm.temperature, "constraints": bm.constraints,
               "sources": dict(bm.settings.sources)}
    if qc is not None:
        summary["quality"] = reports
    log.info("wrote %s: %d frames, %.0f atoms/s", output, n, summary["atoms_per_s"])
    return summary
