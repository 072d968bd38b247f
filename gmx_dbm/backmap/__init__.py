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

from ..io import AtomInfo
from ..io.safe import check_writable
from ..topology import read_topology
from ..mapping import read_mapping
from ..quality import FrameQuality
from .models import SHIPPED_MODELS, model_fits, molecule_signatures, resolve_model, shipped_model_path
from .driver import check_cg_frame
from .pipeline import Backmapper
from .run_parameters import RunParameters
from .settings import FALLBACK_TEMPERATURE, MD_STEPS, SamplerSettings
from .steps import INFERENCE_CHUNK

__all__ = ["backmap", "Backmapper", "SamplerSettings", "SHIPPED_MODELS", "shipped_model_path", "resolve_model",
           "model_fits", "molecule_signatures", "check_cg_frame", "INFERENCE_CHUNK", "MD_STEPS",
           "FALLBACK_TEMPERATURE", "RunParameters"]

log = logging.getLogger(__name__)


def backmap(cg, topology, mapping, output, model=None, gibbs: int | None = None, orientations: int | None = None,
            seed: int = 0, constraints: str = "auto", defines=None, device: str = "cpu",
            progress: bool = True, frames=None, select_temperature: float | None = None,
            quality: bool = True, proposals: int | None = None, proposal_sweeps: int | None = None,
            md_steps: int | None = None, temperature: float | None = None, stereo="auto", mdp=None,
            resume: bool = False, threads: int | None = None, precision: str = "fp32") -> dict:
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
    temperature and force field came from. ``device``: cpu, cuda or cuda:N (``devices.resolve_device``);
    ``precision``: fp32, or bf16/fp16 autocast of the generator's network (``pipeline.with_precision``).

    Started under MPI (``mpirun -n N``, ``srun``; mpi4py) the frames are dealt out to the ranks and rank
    0 writes them in order; each rank takes ``threads`` torch threads (default: the cores it was given) and,
    with ``cuda``, GPU local rank % GPUs. The output does not depend on the number of ranks (``driver``).
    Frames are checkpointed as they are written (``resume``): ``resume`` continues a killed run.
    A CG trajectory whose last frame is incomplete is backmapped up to the frame before it."""
    from .. import __version__
    from ..devices import local_device
    from ..parallel import set_threads, world as mpi_world
    from .driver import FrameRun
    from .resume import fingerprint
    world = mpi_world()
    if world.size > 1 or threads:
        set_threads(threads or None, world)
    dev = local_device(device, world.local_rank, where="--device")
    check_writable(output)
    params = None if mdp is None else RunParameters.read(mdp)   # a bad file fails before the model loads
    system = read_topology(topology, defines=defines)
    mapping_paths = [mapping] if isinstance(mapping, (str, Path)) else list(mapping)
    smap = read_mapping(mapping_paths, system)
    bm = Backmapper.build(system, smap, model, constraints=constraints, seed=seed, device=dev,
                          temperature=temperature, stereo=stereo, gibbs=gibbs, orientations=orientations,
                          proposals=proposals, proposal_sweeps=proposal_sweeps,
                          select_temperature=select_temperature, md_steps=md_steps, mdp=params,
                          precision=precision)
    atoms = AtomInfo.from_topology(bm.flat)
    # constrained bonds have (near) zero energy by construction: not a warning
    qc = FrameQuality(bm.flat, bm.card.reference_stats, skip_terms={"bond"} if bm.constraints != "none" else ()) \
        if quality else None
    fp = fingerprint(cg=cg, topology=topology, mappings=mapping_paths, model=bm.model_path,
                     mdp=mdp if isinstance(mdp, (str, Path)) else None, settings=bm.settings, frames=frames,
                     device_type=dev.type, version=__version__) if world.is_root else {}
    t0 = time.perf_counter()
    run = FrameRun(bm, cg, output, atoms, qc, world, fp, resume=resume, frames=frames,
                   progress=progress and world.is_root)
    n, reports = run.run()
    dt = time.perf_counter() - t0
    summary = {"frames": n, "atoms": int(bm.flat.n_atoms), "seconds": dt,
               "atoms_per_s": n * bm.flat.n_atoms / dt if dt > 0 else float("inf"), "output": str(output),
               "md_steps": bm.md_steps, "temperature": bm.temperature, "constraints": bm.constraints,
               "sources": dict(bm.settings.sources), "ranks": world.size, "device": str(dev),
               "step_seconds": dict(bm.timings)}
    if qc is not None:
        summary["quality"] = reports
    if world.is_root:
        log.info("wrote %s: %d frames, %.0f atoms/s", output, n, summary["atoms_per_s"])
    return summary
