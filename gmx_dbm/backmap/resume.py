"""Checkpoints of a backmap run, so that a run killed by a wall-time limit continues where it stopped.

While a run writes ``OUT`` (e.g. ``aa.xtc``) its frames go to ``.aa.xtc.part.xtc`` beside it, flushed to
disk after every frame, and ``aa.xtc.cpt`` records after each frame how many frames and bytes of that file
are complete, the per-frame quality reports, and a fingerprint of everything that decides the output
(input files, model, settings, seed). ``--resume`` checks the fingerprint, cuts the partial file back to
the recorded size (a frame written after the last checkpoint is dropped) and continues with the next
frame; each frame's random numbers depend only on the seed and the frame's index, so the finished output is
byte-identical to an uninterrupted run on the same kind of device. On success the partial file moves to
``OUT`` (an existing ``OUT`` is backed up as ``#OUT.1#``) and the checkpoint is removed. A run that fails
with an error removes both, as any gmx_dbm output; a killed one leaves them for ``--resume``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

FORMAT = "gmx_dbm backmap checkpoint"
VERSION = 1


def checkpoint_path(output) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".cpt")


def partial_path(output) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.part{output.suffix}")


def file_digest(path, limit: int | None = None) -> str:
    """sha256 of a file (of its first ``limit`` bytes: a CG trajectory that has grown since still matches)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as fh:
        while left is None or left > 0:
            block = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def fingerprint(*, cg, topology, mappings, model, mdp, settings, frames, device_type: str, version: str) -> dict:
    """What decides the output: contents of the inputs (the CG trajectory's first MiB), the model file,
    the resolved settings, the frame selection and the kind of device."""
    def digest(p):
        return None if p is None else file_digest(p)
    s = dataclasses.asdict(settings)
    s.pop("sources", None)
    s.pop("temperature_note", None)
    return {"cg": file_digest(cg, 1 << 20), "topology": digest(topology),
            "mappings": [digest(m) for m in mappings], "model": digest(model), "mdp": digest(mdp),
            "settings": json.loads(json.dumps(s, default=str)), "frames": None if frames is None else str(frames),
            "device": device_type, "gmx_dbm": version}


@dataclasses.dataclass
class Checkpoint:
    fingerprint: dict
    frames: int = 0          # complete frames in the partial file
    nbytes: int = 0          # its size after them
    quality: list = dataclasses.field(default_factory=list)

    def save(self, path) -> None:
        """Atomically (a reader sees the old or the new checkpoint, never half of one)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w") as fh:
            json.dump({"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}, fh, default=float)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "Checkpoint":
        try:
            with open(path) as fh:
                raw = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the checkpoint ({exc}); remove it to start afresh", path=path) from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError("not a gmx_dbm backmap checkpoint", path=path)
        if raw.get("version") != VERSION:
            raise InputError(f"checkpoint version {raw.get('version')}, this gmx_dbm reads version {VERSION}",
                             path=path)
        try:
            return cls(dict(raw["fingerprint"]), int(raw["frames"]), int(raw["nbytes"]), list(raw["quality"]))
        except (KeyError, TypeError, ValueError):
            raise InputError("damaged checkpoint (missing fields); remove it to start afresh", path=path) from None

    def mismatch(self, now: dict) -> list:
        """Names of the fingerprint entries that differ from ``now``."""
        keys = sorted(set(self.fingerprint) | set(now))
        return [k for k in keys if self.fingerprint.get(k) != now.get(k)]


def start(output, fp: dict, resume: bool) -> tuple:
    """(checkpoint to continue from or a fresh one, whether frames are appended). Without ``resume`` an
    old checkpoint is replaced, with a note; with it, a checkpoint made for other inputs or settings is an
    InputError naming what differs, and a missing one starts afresh (job scripts can always pass it)."""
    cpt_path, part = checkpoint_path(output), partial_path(output)
    if not cpt_path.exists():
        if resume:
            log.warning("no checkpoint %s: starting from the first frame", cpt_path)
        return Checkpoint(fp), False
    if not resume:
        log.warning("%s is the checkpoint of an interrupted run; starting afresh (--resume continues it)", cpt_path)
        return Checkpoint(fp), False
    cpt = Checkpoint.load(cpt_path)
    differ = cpt.mismatch(fp)
    if differ:
        raise InputError(f"checkpoint made for other inputs or settings ({', '.join(differ)} differ); run "
                         "with the same ones, or without --resume to start afresh", path=cpt_path)
    if not part.exists() or part.stat().st_size < cpt.nbytes:
        raise InputError(f"the partial output {part} is missing or shorter than the checkpoint records "
                         f"({cpt.nbytes} bytes); run without --resume to start afresh", path=cpt_path)
    log.info("resuming from %s: %d frame(s) done", cpt_path, cpt.frames)
    return cpt, True


def finish(output) -> None:
    """Remove the checkpoint once the output is in place."""
    checkpoint_path(output).unlink(missing_ok=True)


def discard(output) -> None:
    """After an error: neither a partial output nor its checkpoint stays behind."""
    partial_path(output).unlink(missing_ok=True)
    checkpoint_path(output).unlink(missing_ok=True)
