"""A ``Backmapper`` over a trajectory: frames in order, in one process or dealt out to MPI ranks.

Every rank reads the CG trajectory and computes the frames dealt to it (round robin over the selected
frames, ``parallel.World.deal``); rank 0 computes its own share, receives the others' frames, writes all of
them in frame order and keeps the checkpoint (``resume``). A frame's result depends only on the seed and
its index, so the output is the same whatever the number of ranks. A rank that fails sends its error to rank
0, which stops every rank, removes the partial output and raises that error; the other ranks end with
``RankStopped`` (nothing printed, the same exit code).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import GmxDbmError, RankStopped, TrajectoryError
from ..io import Frame, check_names, open_writer, read_selected
from ..parallel import in_order_root, in_order_worker
from . import resume as R

log = logging.getLogger(__name__)

def check_cg_frame(frame: Frame, mflat, path, index: int) -> None:
    """Bead count and, where the file names them, bead names must follow the topology + mapping."""
    if frame.n_atoms != mflat.n_beads:
        raise TrajectoryError(f"frame {index}: {frame.n_atoms} beads, expected {mflat.n_beads} "
                              "(from the topology's [ molecules ] and the mapping)", path=path)
    check_names(frame, mflat.bead_names, path, index, "bead", "the mapping")


def selected_frames(cg, n_beads: int, frames=None):
    """(k, input index, frame) of the frames to backmap, k counting the selected ones. A CG trajectory whose
    last frame is incomplete (the CG run was killed) ends before it, with a warning."""
    return read_selected(cg, n_atoms=n_beads, frames=frames, truncated_end=True)


class FrameRun:
    """One backmap run's loop. ``compute(i, frame)`` -> result dict (positions, quality)."""

    def __init__(self, bm, cg, output, atoms, qc, world, fingerprint: dict, resume: bool = False,
                 frames=None, progress: bool = True):
        self.bm, self.cg, self.output, self.atoms, self.qc = bm, cg, output, atoms, qc
        self.world, self.fp, self.resume, self.frames, self.progress = world, fingerprint, resume, frames, progress
        self.note = bm.settings.temperature_note

    # ------------------------------------------------------------------ per frame
    def compute(self, k: int, i: int, fr: Frame) -> dict:
        check_cg_frame(fr, self.bm.mflat, self.cg, i)
        if self.note and self.world.is_root:   # after the first frame is checked: bad input gives one line only
            log.warning(self.note)
            self.note = None
        t0 = time.perf_counter()
        pos = self.bm.frame(fr.positions, fr.box, i)
        dt = time.perf_counter() - t0
        log.info("frame %d: %d atoms in %.1f s", i, len(pos), dt)
        report = self.qc(i, pos, fr.box) if self.qc is not None else None
        return {"k": k, "i": i, "positions": pos, "box": np.asarray(fr.box, dtype=np.float64),
                "time": fr.time, "step": fr.step, "quality": report, "seconds": dt}

    # ------------------------------------------------------------------ entry
    def run(self) -> tuple:
        """-> (frames written in this run and before it, quality reports of every frame)."""
        return self._root() if self.world.is_root else self._worker()

    def _start(self):
        """Rank 0 decides where to start; every rank learns it (or the error)."""
        comm = self.world.comm
        cpt = appending = err = None
        if self.world.is_root:
            try:
                cpt, appending = R.start(self.output, self.fp, self.resume)
            except GmxDbmError as exc:
                err = exc
        first = None if err is not None or cpt is None else cpt.frames
        if comm is not None:
            first = comm.bcast(first, root=0)
            if first is None and not self.world.is_root:
                raise RankStopped(2)
        if err is not None:
            raise err
        return cpt, appending, first

    def _frames(self):
        return selected_frames(self.cg, self.bm.mflat.n_beads, self.frames)

    def _root(self) -> tuple:
        cpt, appending, first = self._start()
        part = R.partial_path(self.output)
        writer = open_writer(self.output, self.atoms, partial=part, append_at=cpt.nbytes if appending else None,
                             n_frames=cpt.frames)
        from tqdm import tqdm
        bar = tqdm(desc="backmap", unit="frame", initial=first, disable=not self.progress)
        cpt_path = R.checkpoint_path(self.output)

        def write(res):
            writer.write(Frame(res["positions"], res["box"], time=res["time"], step=res["step"]))
            cpt.nbytes = writer.flush()
            cpt.frames += 1
            if res["quality"] is not None:
                cpt.quality.append(res["quality"])
            cpt.save(cpt_path)
            bar.update(1)

        def check(total):
            if total == 0:
                raise TrajectoryError("contains no frames", path=self.cg)
            if total < first:
                raise TrajectoryError(f"has {total} frame(s) to backmap, but the checkpoint records {first} "
                                      "done", path=self.cg)
            writer.close()   # the partial file becomes the output (an existing one is backed up)
            R.finish(self.output)

        try:
            in_order_root(self.world, self._frames(), self.compute, write, first=first, check=check)
        except Exception:
            writer.abort()
            R.discard(self.output)
            raise
        except BaseException:
            # interrupted (Ctrl-C, a signal turned into an exception): keep what is done for --resume
            writer.detach()
            raise
        finally:
            bar.close()
        return cpt.frames, cpt.quality

    def _worker(self) -> tuple:
        _, _, first = self._start()
        in_order_worker(self.world, self._frames(), self.compute, first=first)
        return 0, []


