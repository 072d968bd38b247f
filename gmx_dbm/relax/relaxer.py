"""Relaxing frames: ``Relaxer`` (one topology, one work directory, ``frame(...)`` per frame), ``relax``
(every frame of a file, streamed to an output) and the preparation of start structures
(``separate_overlaps``, ``fresh_workdir``)."""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GmxDbmError, GromacsError, InputError
from ..geometry import minimum_image
from .engines import StageResult, mdrun_failure, read_stage, run_stage_gmx, run_stage_gmxapi
from .mdp import make_mdp, mdp_defines
from .options import RelaxOptions, choose_engine
from .topology import define_map, prepare_topology

log = logging.getLogger(__name__)


def separate_overlaps(positions, box, min_distance: float = 0.05, max_iter: int = 200, seed: int = 0) -> tuple:
    """Push apart atom pairs closer than ``min_distance`` nm (any pair: no real pair is that close).
    Returns (positions, number of pairs found in the first pass).

    Why: GROMACS runs in single precision; two atoms within ~0.01 nm give LJ forces whose square
    overflows, steepest descent reports Fmax = inf and stops "at machine precision" after ~15 steps
    (measured on random starts and on poorly backmapped frames). Moving them to ``min_distance`` leaves the
    rest to EM."""
    from ..neighbors import periodic_pairs
    pos = np.array(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    rng = np.random.default_rng(seed)
    first = None
    for _ in range(max_iter):
        i, j, d = periodic_pairs(pos, box, min_distance)
        if first is None:
            first = len(i)
        if len(i) == 0:
            break
        v = minimum_image(pos[j] - pos[i], box)
        tiny = d < 1e-6
        if tiny.any():
            r = rng.normal(size=(int(tiny.sum()), 3))
            v[tiny] = r / np.linalg.norm(r, axis=1, keepdims=True) * 1e-6
            d = np.where(tiny, 1e-6, d)
        shift = (v / d[:, None]) * (0.5 * 1.02 * (min_distance - d))[:, None]
        np.add.at(pos, i, -shift)
        np.add.at(pos, j, shift)
    return pos, int(first or 0)


@dataclass
class FrameResult:
    index: int
    workdir: str
    positions: np.ndarray
    box: np.ndarray
    em: StageResult | None
    md: StageResult | None
    restrained_rms: float | None       # nm, restrained atoms: final vs restraint reference
    heavy_rms: float | None            # nm, heavy atoms: final vs input
    seconds: float

    def summary(self) -> dict:
        def st(s):
            if s is None:
                return None
            return {k: getattr(s, k) for k in ("steps", "converged", "epot", "fmax", "nsteps", "seconds",
                                                 "constraint_warnings", "log")}
        return {"frame": self.index, "workdir": self.workdir, "em": st(self.em), "md": st(self.md),
                "restrained_rms_nm": self.restrained_rms, "heavy_rms_nm": self.heavy_rms,
                "seconds": self.seconds}


def _rms(a, b, box, idx) -> float | None:
    if len(idx) == 0:
        return None
    d = minimum_image(b[idx] - a[idx], box)
    return float(np.sqrt((d ** 2).sum(-1).mean()))


class Relaxer:
    """Relax frames of one topology: prepares the work directory once, then ``frame(...)`` per frame."""

    def __init__(self, topology, workdir, options: RelaxOptions | None = None, defines=None, include_dirs=None):
        from ..gromacs import find_gmx
        from ..io import AtomInfo
        from ..io.mdp import read_mdp
        self.options = options or RelaxOptions()
        self.options.check()
        self.workdir = Path(workdir).resolve()
        self.engine = choose_engine(self.options.engine)
        user = read_mdp(self.options.mdp) if self.options.mdp else None
        # grompp reads the topology with the user .mdp's defines as well
        extra = mdp_defines(user)
        if isinstance(defines, dict):
            given = {**define_map(extra), **defines}
        else:
            given = list(dict.fromkeys([*(defines or []), *extra]))
        self.prepared = prepare_topology(topology, self.workdir, self.options.restrain, self.options.fc,
                                         given, include_dirs)
        self.atoms = AtomInfo.from_topology(self.prepared.flat)
        # after the topology: its errors are the user's to fix whether GROMACS is installed or not
        self.gmx = find_gmx()
        self.mdp = {}
        for stage in ("em", "md"):
            text, nsteps = make_mdp(stage, self.options, self.prepared, user)
            path = self.workdir / f"{stage}.mdp"
            path.write_text(text)
            self.mdp[stage] = (path, nsteps)
        log.info("relax: engine %s, work directory %s, %d restrained atoms (%s, fc %g)", self.engine,
                 self.workdir, len(self.prepared.restrained), self.options.restrain, self.options.fc)

    @property
    def n_atoms(self) -> int:
        return int(self.prepared.flat.n_atoms)

    def _stage(self, stage, fdir: Path, conf: Path, ref) -> StageResult:
        sdir = fdir / stage
        sdir.mkdir(parents=True, exist_ok=False)
        mdp, nsteps = self.mdp[stage]
        run = run_stage_gmxapi if self.engine == "gmxapi" else run_stage_gmx
        t0 = time.perf_counter()
        files = run(stage, sdir, mdp, conf, ref, self.prepared.top, nsteps, self.options, self.gmx)
        dt = time.perf_counter() - t0
        if not Path(files.conf).is_file():
            raise GromacsError(f"{stage}: mdrun wrote no final structure: {mdrun_failure(sdir)}", workdir=sdir)
        res = StageResult(stage, str(sdir), str(files.log), str(files.conf), nsteps, dt,
                          **read_stage(stage, files.log, files.edr))
        if stage == "em" and res.fmax is not None and not math.isfinite(res.fmax):
            raise GromacsError(f"energy minimisation stopped after {res.steps} steps with an infinite force "
                               "(atoms on top of each other in the start structure? see --min-distance)",
                               workdir=sdir)
        return res

    def frame(self, frame, index: int = 0, reference=None) -> FrameResult:
        """Relax one Frame (positions in topology order). ``reference``: restraint reference positions
        (default: the frame itself)."""
        from ..io import Frame, open_writer, read_frame
        t0 = time.perf_counter()
        fdir = self.workdir / f"frame{index:04d}"
        fdir.mkdir(parents=True, exist_ok=False)
        conf = fdir / "start.gro"
        start = np.asarray(frame.positions, float)
        if reference is None and self.options.min_distance > 0:
            start, n_close = separate_overlaps(start, frame.box, self.options.min_distance, seed=index)
            if n_close:
                reference = np.asarray(frame.positions, float)
                log.warning("frame %d: %d atom pairs closer than %g nm pushed apart before EM (restraint "
                            "reference unchanged)", index, n_close, self.options.min_distance)
        with open_writer(conf, self.atoms) as w:
            w.write(Frame(start, np.asarray(frame.box, float), frame.time, frame.step))
        ref = None
        if len(self.prepared.restrained):
            ref = conf
            if reference is not None:
                ref = fdir / "reference.gro"
                with open_writer(ref, self.atoms) as w:
                    w.write(Frame(np.asarray(reference, float), np.asarray(frame.box, float)))
        em = md = None
        current = conf
        if self.options.steps_em > 0:
            em = self._stage("em", fdir, current, ref)
            current = Path(em.conf)
            log.info("frame %d: EM %s in %s steps, Epot %.4g kJ/mol, Fmax %.3g (%.1f s)", index,
                     "converged" if em.converged else "did NOT converge", em.steps, em.epot or float("nan"),
                     em.fmax or float("nan"), em.seconds)
        if self.options.md_ps > 0:
            md = self._stage("md", fdir, current, ref)
            current = Path(md.conf)
            log.info("frame %d: MD %d steps, <Epot> %.4g kJ/mol, %d constraint warnings (%.1f s)", index,
                     md.nsteps, md.epot if md.epot is not None else float("nan"), md.constraint_warnings,
                     md.seconds)
        final = read_frame(current, n_atoms=self.n_atoms)
        refpos = np.asarray(frame.positions if reference is None else reference, float)
        box = np.asarray(final.box, float)
        return FrameResult(index, str(fdir), final.positions, box, em, md,
                           _rms(refpos, final.positions, box, self.prepared.restrained),
                           _rms(np.asarray(frame.positions, float), final.positions, box, self.prepared.heavy),
                           time.perf_counter() - t0)


def fresh_workdir(workdir=None, output=None) -> Path:
    """``workdir`` itself when it does not exist or is empty, else a fresh folder inside it; without
    ``workdir`` a fresh ``gmx_dbm_relax_<output stem>_*`` folder next to the output."""
    if workdir is not None:
        w = Path(workdir)
        if not w.exists() or (w.is_dir() and not any(w.iterdir())):
            w.mkdir(parents=True, exist_ok=True)
            return w.resolve()
        if not w.is_dir():
            raise InputError("work directory path exists and is not a folder", path=w)
        return Path(tempfile.mkdtemp(prefix="run_", dir=w)).resolve()
    base = Path(output).resolve().parent if output is not None else Path.cwd()
    stem = Path(output).stem if output is not None else "run"
    return Path(tempfile.mkdtemp(prefix=f"gmx_dbm_relax_{stem}_", dir=base)).resolve()


def relax(conf, topology, output, options: RelaxOptions | None = None, workdir=None, defines=None,
          include_dirs=None, frames=None, world=None) -> dict:
    """Relax every frame of ``conf`` (.gro/.xtc/.pdb) and stream the results to ``output``.
    Returns a summary (work directory, per-frame EM/MD results).

    Started as several MPI ranks (``world``: default ``gmx_dbm.parallel.world()``), every rank calls this:
    the frames are dealt out to the ranks, rank 0 writes them in order and every rank returns rank 0's
    summary (``ranks``). ``world=gmx_dbm.parallel.World()``: a one-process relaxation on this rank alone."""
    from ..errors import TrajectoryError
    from ..io import Frame, open_writer, read_frames
    from ..io.safe import check_writable
    from ..parallel import world as mpi_world
    world = mpi_world() if world is None else world
    options = options or RelaxOptions()
    if world.size > 1:
        from .ranks import relax_ranks
        return relax_ranks(conf, topology, output, options, workdir, defines, include_dirs, frames, world,
                           Relaxer, fresh_workdir)
    options.check()
    check_writable(output)
    wd = fresh_workdir(workdir, output)
    try:
        relaxer = Relaxer(topology, wd, options, defines, include_dirs)
        t0 = time.perf_counter()
        results = []
        with open_writer(output, relaxer.atoms) as writer:
            for i, fr in enumerate(read_frames(conf, n_atoms=relaxer.n_atoms)):
                if frames is not None and i not in frames:
                    continue
                res = relaxer.frame(fr, i)
                writer.write(Frame(res.positions, res.box, time=fr.time, step=fr.step))
                results.append(res.summary())
            if not results:
                raise TrajectoryError("contains no frames", path=conf)
    except GmxDbmError as exc:
        # bad input (or no GROMACS) leaves nothing behind: the work directory we made beside the output
        # goes too; GROMACS failures keep theirs for inspection, and a --workdir the user named stays
        ran = any(wd.glob("frame*"))  # frames already relaxed keep their logs
        if workdir is None and ((isinstance(exc, InputError) and not ran) or not any(wd.iterdir())):
            shutil.rmtree(wd, ignore_errors=True)
        raise
    summary = {"workdir": str(wd), "engine": relaxer.engine, "frames": results,
               "seconds": time.perf_counter() - t0, "output": str(output)}
    log.info("wrote %s: %d relaxed frames in %.1f s (work directory %s)", output, len(results),
             summary["seconds"], wd)
    return summary
