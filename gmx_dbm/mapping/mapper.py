"""All-atom frames -> CG frames with a system's mapping (molecules made whole along bonds first)."""
from __future__ import annotations

import logging

import numpy as np

from .model import SystemMapping

log = logging.getLogger(__name__)


class Mapper:
    """Maps all-atom frames of ``system`` to CG frames with ``mapping``. Builds the bond graph walk
    (molecules made whole along bonds) and the sparse centre matrix once."""

    def __init__(self, system, mapping: SystemMapping, wrap: bool = True):
        from ..geometry import WholePlan
        self.system = system
        self.flat = mapping.flat()
        self.wrap = wrap
        bonds = []
        for mt, off in system.instances():
            bonds.extend((i + off, j + off) for i, j in mt.graph.edges())
        self.plan = WholePlan(system.n_atoms, np.asarray(bonds, dtype=np.int64).reshape(-1, 2))

    def map(self, frame):
        from ..geometry import wrap as wrap_positions
        from ..io.frames import Frame
        whole = self.plan.apply(frame.positions, frame.box)
        beads = self.flat.centre @ whole
        if self.wrap:
            beads = wrap_positions(beads, frame.box)
        return Frame(positions=np.asarray(beads), box=np.array(frame.box, dtype=np.float64), time=frame.time,
                     step=frame.step, atoms=self.flat.atom_info(),
                     title=f"CG (gmx_dbm map) of: {frame.title}" if frame.title else "CG (gmx_dbm map)")


def map_positions(frame, system, mapping: SystemMapping, wrap: bool = True):
    """One all-atom ``Frame`` -> CG ``Frame`` (molecules made whole first; beads wrapped into the box
    the GROMACS way unless ``wrap=False``). For many frames use ``Mapper``."""
    return Mapper(system, mapping, wrap=wrap).map(frame)


def map_trajectory(trajectory, system, mapping: SystemMapping, output, structure=None, wrap: bool = True,
                   **writer_options) -> int:
    """Map every frame of ``trajectory`` (.gro/.xtc/.pdb) and write the CG frames to ``output``
    (.gro/.xtc/.pdb, written atomically). ``structure`` (optional) is checked to have the topology's
    atom count; ``trajectory`` and ``structure``, where they name their atoms, must have the topology's atom
    names in order. Returns the number of frames."""
    from ..io import check_names, check_writable, open_writer, read_frame, read_frames
    check_writable(output)
    n = system.n_atoms
    names = [mt.graph.nodes[i]["name"] for mt, _ in system.instances() for i in range(mt.n_atoms)]
    if structure is not None:
        check_names(read_frame(structure, n_atoms=n), names, structure, 0, "atom", "the topology")
    mapper = Mapper(system, mapping, wrap=wrap)
    with open_writer(output, mapper.flat.atom_info(), **writer_options) as w:
        for k, frame in enumerate(read_frames(trajectory, n_atoms=n)):
            if k == 0:
                check_names(frame, names, trajectory, 0, "atom", "the topology")
            w.write(mapper.map(frame))
    log.info("mapped %d frame(s) of %d atoms to %d beads: %s", w.n_frames, n, mapper.flat.n_beads, output)
    return w.n_frames
