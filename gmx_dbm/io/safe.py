"""Safe output: write to a temporary file next to the target, move it into place only on success.

An existing target is backed up the GROMACS way (``#name.1#``, ``#name.2#``, ...) so that a run never
silently destroys a previous result, and a failed run leaves no partial file behind.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from ..errors import OutputError

log = logging.getLogger(__name__)

# GROMACS' default limit (GMX_MAXBACKUP); -1 there disables backups, here too.
MAX_BACKUPS = int(os.environ.get("GMX_MAXBACKUP", "99"))


def backup_name(path) -> Path:
    """The first free ``#name.N#`` beside ``path``."""
    path = Path(path)
    for n in range(1, max(MAX_BACKUPS, 1) + 1):
        cand = path.with_name(f"#{path.name}.{n}#")
        if not cand.exists():
            return cand
    raise OutputError(f"{path}: won't make more than {MAX_BACKUPS} backups; remove old #{path.name}.N# "
                      "files or raise GMX_MAXBACKUP")


def check_writable(path) -> Path:
    """Fail early (``OutputError``) when ``path`` cannot be written: missing or unwritable folder, or a
    directory in the way. Returns the path. Call this before doing expensive work."""
    path = Path(path)
    if str(path) == "":
        raise OutputError("empty output file name")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"{path}: output folder {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output folder {folder} is not writable")
    if path.exists() and MAX_BACKUPS > 0 and not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: cannot back up the existing file")
    return path


def _umask() -> int:
    # Linux reports the umask without changing it; elsewhere set-and-restore is the only way, which
    # briefly changes it for every thread of the process
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def commit(tmp, path) -> None:
    """Move a finished temporary file to ``path``, backing up an existing ``path`` first."""
    tmp, path = Path(tmp), Path(path)
    # mkstemp creates 0600 files; give the result the permissions a normal open() would
    os.chmod(tmp, 0o666 & ~_umask())
    if path.exists():
        if MAX_BACKUPS < 0:
            pass  # GMX_MAXBACKUP=-1: overwrite, as GROMACS does
        else:
            bak = backup_name(path)
            os.replace(path, bak)
            log.info("Backed up %s to %s", path, bak)
    os.replace(tmp, path)


def temporary_path(path) -> Path:
    """A new empty temporary file in the target's folder with the target's extension (some writers infer
    the format from it)."""
    path = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                                   prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as exc:
        raise OutputError(f"{path}: cannot create a temporary file: {exc.strerror}") from exc
    os.close(fd)
    return Path(tmp)


def discard(tmp) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path to write to; on clean exit move it to ``path`` (backing up an existing
    file as ``#name.N#``); on an exception remove it, so that no partial output exists.

    >>> with atomic_output("model.json") as tmp:
    ...     Path(tmp).write_text("{}")
    """
    tmp = temporary_path(path)
    try:
        yield tmp
    except BaseException:
        discard(tmp)
        raise
    try:
        commit(tmp, path)
    except OSError as exc:
        discard(tmp)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"{path}: cannot move the finished output into place: {exc}") from exc
