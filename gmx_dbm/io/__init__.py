"""Structure/trajectory input and output (.gro, .xtc, .pdb) and safe output files. No torch here.

``read_frames(path, n_atoms=None)`` streams ``Frame``s; ``open_writer(path, atoms)`` returns a
``FrameWriter`` that writes atomically (temporary file, GROMACS-style ``#name.N#`` backups);
``atomic_output(path)`` gives the same guarantees to any other file kind. The reader and writer come
from the file extension, looked up in the table of ``gmx_dbm.io.base`` where each format module
registers itself (``register_reader`` / ``register_writer``).
"""
from .base import check_names, register_reader, register_writer
from .frames import (READ_FORMATS, WRITE_FORMATS, AtomInfo, Frame, FrameWriter, count_frames, open_writer,
                     read_frame, read_frames, read_selected, write_frames)
from .safe import atomic_output, backup_name, check_writable

__all__ = ["Frame", "AtomInfo", "FrameWriter", "read_frames", "read_selected", "read_frame", "count_frames", "open_writer",
           "write_frames", "atomic_output", "check_writable", "backup_name", "READ_FORMATS", "WRITE_FORMATS",
           "register_reader", "register_writer", "check_names"]
