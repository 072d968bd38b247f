"""``relax`` over MPI ranks (``mpirun -n N gmx_dbm relax ...``): the frames are dealt out round robin.

Every rank reads the input and relaxes the frames dealt to it (``k % size == rank``, k counting the selected
frames) with the one-frame path (``Relaxer.frame``) in its own work directory ``<workdir>/rank<r>``
(topology wrapper, mdp files, ``frame<i>`` folders). Rank 0 relaxes its own share, receives the others'
frames, writes all of them in frame order through the same atomic writer as a one-process run (temporary
file, ``#name.1#`` backup of an existing output) and gathers the per-frame summaries. A frame's result
depends only on the frame, its index and the options, so the output equals a one-process run's when mdrun
is deterministic (one OpenMP thread: ``--md-threads 1``).

A rank that fails sends its error to rank 0, which stops every rank, removes the temporary output and
raises that error; the other ranks end with ``RankStopped`` (nothing printed, the same exit code: 2 for
gmx_dbm errors, 1 for anything else).

gmxapi's own ensemble (``gmxapi.mdrun(input=[tpr, ...])`` over mpi4py's COMM_WORLD) is not used: it runs
mdrun inside the MPI rank's own process, and a GROMACS fatal error there ends that process with exit 1 and
no Python exception, so mpirun aborts the job before rank 0 can report anything (see docs/RELAX.md).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError, RankStopped, TrajectoryError
from ..io import read_selected
from ..parallel import exit_code, in_order_root, in_order_worker, on_root, portable, rank_cores
from .options import RelaxOptions

log = logging.getLogger(__name__)

def rank_threads(options: RelaxOptions, world) -> int:
    """mdrun threads of each rank: ``options.threads`` when given, else ``parallel.rank_cores``.
    Collective."""
    cores = rank_cores(world)
    return int(options.threads) if options.threads else cores


class RankRun:
    """One relaxation spread over the ranks of ``world``. ``run()`` -> the summary (on every rank)."""

    def __init__(self, conf, topology, output, options: RelaxOptions, workdir, defines, include_dirs,
                 frames, world, make_relaxer, make_workdir):
        self.make_relaxer, self.make_workdir = make_relaxer, make_workdir
        self.conf, self.topology, self.output = conf, topology, output
        self.options, self.workdir, self.defines, self.include_dirs = options, workdir, defines, include_dirs
        self.frames, self.world, self.comm = frames, world, world.comm
        self.wd = None
        self.relaxer = None

    def owner(self, k: int) -> int:
        return k % self.world.size

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        """Rank 0 checks the output and makes the work directory; every rank prepares its Relaxer in
        ``<workdir>/rank<r>``. Any rank's error stops all of them (rank 0 raises the lowest rank's)."""
        from ..io.safe import check_writable
        threads = rank_threads(self.options, self.world)

        def first():
            self.options.check()
            check_writable(self.output)
            return str(self.make_workdir(self.workdir, self.output))

        self.wd = Path(on_root(self.world, first))
        err = None
        try:
            options = replace(self.options, threads=threads)
            self.relaxer = self.make_relaxer(self.topology, self.wd / f"rank{self.world.rank}", options,
                                             self.defines, self.include_dirs)
        except Exception as exc:
            err = exc
        errors = self.comm.gather(None if err is None else portable(err, self.world.rank), root=0)
        first = next((e for e in errors if e is not None), None) if self.world.is_root else None
        code = self.comm.bcast(exit_code(first), root=0)
        if code:
            if self.world.is_root:
                self._clean(first)
                raise first
            raise RankStopped(code)
        if self.world.is_root:
            log.info("relax: %d MPI ranks, frames dealt round robin, mdrun -nt %d per rank, work "
                     "directories %s/rank*", self.world.size, threads, self.wd)

    def _clean(self, exc) -> None:
        """As a one-process run: bad input leaves nothing behind (the work directory made beside the
        output goes); GROMACS failures keep theirs, and a --workdir the user named stays."""
        if self.workdir is not None or self.wd is None or not self.wd.is_dir():
            return
        ran = any(self.wd.glob("rank*/frame*"))   # frames already relaxed keep their logs
        if (isinstance(exc, InputError) and not ran) or not any(p.is_file() for p in self.wd.rglob("*")):
            shutil.rmtree(self.wd, ignore_errors=True)

    # ------------------------------------------------------------------ per frame
    def compute(self, k: int, i: int, fr) -> dict:
        res = self.relaxer.frame(fr, i)
        summary = res.summary()
        summary["rank"] = self.world.rank
        return {"k": k, "i": i, "positions": np.asarray(res.positions), "box": np.asarray(res.box),
                "time": fr.time, "step": fr.step, "summary": summary}

    # ------------------------------------------------------------------ entry
    def run(self) -> dict:
        self._setup()
        return self._root() if self.world.is_root else self._worker()

    def _frames(self):
        return read_selected(self.conf, n_atoms=self.relaxer.n_atoms, frames=self.frames)

    def _root(self) -> dict:
        from ..io import Frame, open_writer
        t0 = time.perf_counter()
        writer = None
        results = []

        def write(res):
            writer.write(Frame(res["positions"], res["box"], time=res["time"], step=res["step"]))
            results.append(res["summary"])
            s = res["summary"]
            if s["rank"] != 0:   # rank 0 logs its own frames as it relaxes them
                log.info("frame %d: relaxed on rank %d (%.1f s)", s["frame"], s["rank"], s["seconds"])

        def check(total):
            if total == 0:
                raise TrajectoryError("contains no frames", path=self.conf)
            writer.close()   # the temporary file becomes the output (an existing one is backed up)

        try:
            writer = open_writer(self.output, self.relaxer.atoms)
            in_order_root(self.world, self._frames(), self.compute, write, check=check)
        except Exception as exc:
            if writer is not None:
                writer.abort()
            self._clean(exc)
            raise
        except BaseException:
            if writer is not None:
                writer.abort()   # interrupted: mpirun ends the other ranks
            raise
        summary = {"workdir": str(self.wd), "engine": self.relaxer.engine, "frames": results,
                   "seconds": time.perf_counter() - t0, "output": str(self.output), "ranks": self.world.size}
        log.info("wrote %s: %d relaxed frames in %.1f s on %d ranks (work directory %s)", self.output,
                 len(results), summary["seconds"], self.world.size, self.wd)
        return self.comm.bcast(summary, root=0)

    def _worker(self) -> dict:
        in_order_worker(self.world, self._frames(), self.compute)
        return self.comm.bcast(None, root=0)


def relax_ranks(conf, topology, output, options: RelaxOptions, workdir, defines, include_dirs, frames,
                world, make_relaxer, make_workdir) -> dict:
    """``relax`` with the frames dealt out to the ranks of ``world`` (size > 1); every rank calls it and
    every rank gets the summary rank 0 gathered. ``make_relaxer(topology, workdir, options, defines,
    include_dirs)`` and ``make_workdir(workdir, output)``: ``relaxer.Relaxer`` and ``relaxer.fresh_workdir``
    (passed in: this module does not import ``relaxer``, which imports it)."""
    return RankRun(conf, topology, output, options, workdir, defines, include_dirs, frames, world,
                   make_relaxer, make_workdir).run()
