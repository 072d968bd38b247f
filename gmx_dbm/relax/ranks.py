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
import os
import pickle
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import GmxDbmError, InputError, RankStopped, TrajectoryError
from .options import RelaxOptions

log = logging.getLogger(__name__)

TAG_RESULT, TAG_ERROR, TAG_DONE, TAG_STOP = 21, 22, 23, 24
# results a rank may have in flight to rank 0 before it waits (bounds its memory)
IN_FLIGHT = 2


def _code(exc) -> int:
    return 0 if exc is None else 2 if isinstance(exc, GmxDbmError) else 1


def _portable(exc: BaseException, rank: int) -> BaseException:
    """``exc`` if it survives pickling with the same message, else a stand-in of the same kind (a
    GmxDbmError stays one: the exit code depends on it)."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:   # not picklable: the stand-in below carries its message
        pass
    if isinstance(exc, GmxDbmError):
        return GmxDbmError(str(exc))
    return RuntimeError(f"rank {rank}: {type(exc).__name__}: {exc}")


def rank_threads(options: RelaxOptions, world) -> int:
    """mdrun threads of each rank: ``options.threads`` when given, else the cores this rank may use (its
    affinity mask), divided among the ranks on its node when mpirun did not bind them. Collective."""
    from mpi4py import MPI
    on_node = world.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    if options.threads:
        return int(options.threads)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cores = os.cpu_count() or 1
    if cores >= (os.cpu_count() or 1):   # not bound: the ranks on this node share its cores
        cores //= max(1, on_node)
    return max(1, cores)


def _selected(conf, n_atoms: int, frames):
    """(k, input index, frame) of the frames to relax, k counting the selected ones."""
    from ..io import read_frames
    k = 0
    for i, fr in enumerate(read_frames(conf, n_atoms=n_atoms)):
        if frames is not None and i not in frames:
            continue
        yield k, i, fr
        k += 1


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
        err = None
        if self.world.is_root:
            try:
                self.options.check()
                check_writable(self.output)
                self.wd = self.make_workdir(self.workdir, self.output)
            except Exception as exc:
                err = exc
        msg = ((None if self.wd is None else str(self.wd)), _code(err)) if self.world.is_root else None
        wd, code = self.comm.bcast(msg, root=0)
        if code:
            if self.world.is_root:
                raise err
            raise RankStopped(code)
        self.wd = Path(wd)
        try:
            options = replace(self.options, threads=threads)
            self.relaxer = self.make_relaxer(self.topology, self.wd / f"rank{self.world.rank}", options,
                                             self.defines, self.include_dirs)
        except Exception as exc:
            err = exc
        errors = self.comm.gather(None if err is None else _portable(err, self.world.rank), root=0)
        first = next((e for e in errors if e is not None), None) if self.world.is_root else None
        code = self.comm.bcast(_code(first), root=0)
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

    def _root(self) -> dict:
        from ..io import Frame, open_writer
        comm = self.comm
        t0 = time.perf_counter()
        writer = None
        pending, done_ranks, results = {}, set(), []
        nxt = 0

        def write(res):
            writer.write(Frame(res["positions"], res["box"], time=res["time"], step=res["step"]))
            results.append(res["summary"])
            s = res["summary"]
            if s["rank"] != 0:   # rank 0 logs its own frames as it relaxes them
                log.info("frame %d: relaxed on rank %d (%.1f s)", s["frame"], s["rank"], s["seconds"])

        def receive():
            from mpi4py import MPI
            status = MPI.Status()
            msg = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
            tag, src = status.Get_tag(), status.Get_source()
            if tag == TAG_ERROR:
                log.debug("rank %d failed: %s", src, msg)
                raise msg
            if tag == TAG_DONE:
                done_ranks.add(src)
                return
            pending[msg["k"]] = msg

        def drain(upto: int):
            nonlocal nxt
            while nxt <= upto:
                if nxt in pending:
                    write(pending.pop(nxt))
                    nxt += 1
                elif self.owner(nxt) == 0:
                    return
                else:
                    receive()

        failed = None
        total = 0
        try:
            writer = open_writer(self.output, self.relaxer.atoms)
            for k, i, fr in _selected(self.conf, self.relaxer.n_atoms, self.frames):
                total = k + 1
                if self.owner(k) == 0:
                    drain(k - 1)
                    pending[k] = self.compute(k, i, fr)
                drain(k)
            drain(total - 1)
            if total == 0:
                raise TrajectoryError("contains no frames", path=self.conf)
            writer.close()   # the temporary file becomes the output (an existing one is backed up)
        except Exception as exc:
            failed = exc
            if writer is not None:
                writer.abort()
        except BaseException:
            if writer is not None:
                writer.abort()   # interrupted: mpirun ends the other ranks
            raise
        self._finish_root(failed, done_ranks)
        if failed is not None:
            self._clean(failed)
            raise failed
        summary = {"workdir": str(self.wd), "engine": self.relaxer.engine, "frames": results,
                   "seconds": time.perf_counter() - t0, "output": str(self.output), "ranks": self.world.size}
        log.info("wrote %s: %d relaxed frames in %.1f s on %d ranks (work directory %s)", self.output,
                 len(results), summary["seconds"], self.world.size, self.wd)
        return comm.bcast(summary, root=0)

    def _finish_root(self, failed, done_ranks: set) -> None:
        from mpi4py import MPI
        comm = self.comm
        if failed is not None:
            for r in range(1, self.world.size):
                comm.send(None, dest=r, tag=TAG_STOP)
        while len(done_ranks) < self.world.size - 1:   # match every message the ranks sent
            status = MPI.Status()
            comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
            if status.Get_tag() == TAG_DONE:
                done_ranks.add(status.Get_source())
        comm.bcast(_code(failed), root=0)

    def _worker(self) -> dict:
        comm = self.comm
        in_flight, stopped = [], False
        try:
            for k, i, fr in _selected(self.conf, self.relaxer.n_atoms, self.frames):
                if self.owner(k) != self.world.rank:
                    continue
                if comm.Iprobe(source=0, tag=TAG_STOP):
                    comm.recv(source=0, tag=TAG_STOP)
                    stopped = True
                    break
                in_flight.append(comm.isend(self.compute(k, i, fr), dest=0, tag=TAG_RESULT))
                while len(in_flight) > IN_FLIGHT:
                    in_flight.pop(0).wait()
        except Exception as exc:   # rank 0 reports it; this rank ends quietly
            comm.send(_portable(exc, self.world.rank), dest=0, tag=TAG_ERROR)
        for req in in_flight:
            req.wait()
        comm.send(None, dest=0, tag=TAG_DONE)
        code = comm.bcast(None, root=0)
        if code:
            if not stopped:
                comm.recv(source=0, tag=TAG_STOP)
            raise RankStopped(code)
        return comm.bcast(None, root=0)


def relax_ranks(conf, topology, output, options: RelaxOptions, workdir, defines, include_dirs, frames,
                world, make_relaxer, make_workdir) -> dict:
    """``relax`` with the frames dealt out to the ranks of ``world`` (size > 1); every rank calls it and
    every rank gets the summary rank 0 gathered. ``make_relaxer(topology, workdir, options, defines,
    include_dirs)`` and ``make_workdir(workdir, output)``: ``relaxer.Relaxer`` and ``relaxer.fresh_workdir``
    (passed in: this module does not import ``relaxer``, which imports it)."""
    return RankRun(conf, topology, output, options, workdir, defines, include_dirs, frames, world,
                   make_relaxer, make_workdir).run()
