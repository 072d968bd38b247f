"""Training data: paired all-atom / CG frames with their topology, mapping and generation recipe."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..io import read_frames
from ..topology import read_topology
from ..mapping import read_mapping
from ..model.recipe import FeatureSpec, Recipe
from .config import DataSet, parse_slice

log = logging.getLogger(__name__)


@dataclass
class SystemData:
    name: str
    recipe: Recipe
    aa: torch.Tensor          # (F, N, 3) nm
    cg: torch.Tensor          # (F, nb, 3) nm
    box: torch.Tensor         # (F, 3, 3) nm

    @property
    def n_frames(self) -> int:
        return self.aa.shape[0]


def load_structures(ds: DataSet):
    """-> (System, SystemMapping) for a data set."""
    system = read_topology(ds.topology)
    mapping = read_mapping(ds.mapping, system)
    return system, mapping


def _read_all(paths, n) -> tuple:
    pos, box = [], []
    for p in paths:
        for fr in read_frames(p, n_atoms=n):
            pos.append(np.asarray(fr.positions, dtype=np.float32))
            box.append(np.asarray(fr.box, dtype=np.float32))
    return pos, box


def load_system_data(ds: DataSet, spec: FeatureSpec, structures=None) -> SystemData:
    system, mapping = structures or load_structures(ds)
    flat = system.flat()
    mflat = mapping.flat()
    recipe = Recipe(flat, mflat, spec)
    aa, box_aa = _read_all(ds.aa, flat.n_atoms)
    if ds.cg:
        cg, _ = _read_all(ds.cg, len(mflat.bead_types))
    else:   # no CG files: the CG frames are the mapping of the all-atom ones
        from ..io.frames import Frame
        from ..mapping import Mapper
        mapper = Mapper(system, mapping)
        cg = [np.asarray(mapper.map(Frame(positions=x.astype(np.float64), box=b.astype(np.float64))).positions,
                         dtype=np.float32) for x, b in zip(aa, box_aa)]
    idx = list(range(len(aa)))[parse_slice(ds.frames)]
    cidx = list(range(len(cg)))[parse_slice(ds.cg_frames or ds.frames)]
    if len(idx) != len(cidx):
        raise ConfigError(f"data set {ds.aa[0]}: {len(idx)} all-atom frames selected but {len(cidx)} CG frames "
                          f"(files hold {len(aa)} and {len(cg)}; see frames / cg_frames)")
    if not idx:
        raise ConfigError(f"data set {ds.aa[0]}: frame selection {ds.frames!r} selects no frames (of {len(aa)})")
    log.info("data %s: %d frames, %d atoms, %d beads", ds.topology, len(idx), flat.n_atoms, len(mflat.bead_types))
    return SystemData(ds.topology, recipe, torch.from_numpy(np.stack([aa[i] for i in idx])),
                      torch.from_numpy(np.stack([cg[i] for i in cidx])),
                      torch.from_numpy(np.stack([box_aa[i] for i in idx])))


def vocabulary(structures: list, features) -> FeatureSpec:
    """Feature channels derived from the training topologies/mappings, unless the config lists them."""
    atom_types, bead_types = set(), set()
    alias = dict(features.bead_type_alias)
    for system, mapping in structures:
        flat = system.flat()
        atom_types.update(map(str, flat.types))
        bead_types.update(alias.get(str(t), str(t)) for t in mapping.flat().bead_types)
    return FeatureSpec(list(features.atom_types) or sorted(atom_types),
                       list(features.bead_types) or sorted(bead_types), alias)
