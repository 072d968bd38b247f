"""Coarse-grained mappings: which atoms each bead generates, where bead centres are, local-frame axes.

``read_mapping`` reads every supported format (``reader``); ``Mapper`` / ``map_trajectory`` map
all-atom frames to CG frames; ``write_expanded`` writes the expanded per-molecule form.
"""
from .mapper import Mapper, map_positions, map_trajectory
from .model import Bead, FlatMapping, MoleculeMapping, SystemMapping, default_align
from .reader import mapping_format, read_mapping
from .writer import write_expanded

__all__ = ["Bead", "FlatMapping", "Mapper", "MoleculeMapping", "SystemMapping", "default_align", "map_positions",
           "map_trajectory", "mapping_format", "read_mapping", "write_expanded"]
