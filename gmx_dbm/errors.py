"""The package's exceptions: one root, so callers can catch everything gmx_dbm raises.

Input errors carry where the problem is (file and line, or molecule/atom/bead) and what was expected;
``str(error)`` is the one line the CLI prints before exiting with code 2.
"""
from __future__ import annotations


class GmxDbmError(Exception):
    """Root of every error gmx_dbm raises on purpose."""


class InputError(GmxDbmError, ValueError):
    """Bad or inconsistent user input.

    ``path`` and ``line`` (1-based) locate the problem in a file; ``where`` names a molecule, atom or
    bead when there is no line to point at.
    """

    def __init__(self, message: str, path=None, line: int | None = None, where: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.where = where
        super().__init__(self.__str__())

    def __str__(self) -> str:
        loc = ""
        if self.path is not None:
            loc = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.where:
            loc = f"{loc} ({self.where})" if loc else self.where
        return f"{loc}: {self.message}" if loc else self.message


class TopologyError(InputError):
    """A GROMACS topology that cannot be read or is inconsistent."""


class MappingError(InputError):
    """A mapping file that cannot be read or does not fit the topology."""


class TrajectoryError(InputError):
    """A structure or trajectory file that cannot be read or does not fit the topology."""


class TruncatedTrajectoryError(TrajectoryError):
    """A trajectory that ends inside a frame (the run writing it was killed): ``frame`` is the incomplete
    frame's index; every frame before it is complete."""

    def __init__(self, message: str, path=None, line: int | None = None, where: str | None = None,
                 frame: int = 0):
        self.frame = int(frame)
        super().__init__(message, path=path, line=line, where=where)


class ConfigError(InputError):
    """A training/run configuration with unknown keys, wrong types or bad values."""


class ModelFileError(InputError):
    """A model/checkpoint file that is corrupt, unsafe, or made for another topology/mapping."""


class OutputError(GmxDbmError, OSError):
    """An output that cannot be written."""


class RankStopped(GmxDbmError):
    """This MPI rank stopped because the run failed (rank 0 reports the error); ``code`` is the exit code
    every rank ends with. Nothing to print."""

    def __init__(self, code: int = 2):
        self.code = int(code)
        super().__init__(f"stopped: the run failed (exit code {self.code}; rank 0 reports why)")


class GromacsError(GmxDbmError):
    """GROMACS is missing or a GROMACS step failed; the message is the distilled GROMACS error."""

    def __init__(self, message: str, workdir=None):
        self.workdir = None if workdir is None else str(workdir)
        text = message if workdir is None else f"{message} (work directory kept: {workdir})"
        super().__init__(text)
