"""The all-atom system: molecules as interaction graphs and flat index arrays (``model``), read from
GROMACS topologies (``reader``)."""
from .model import (IMPROPER_FUNCS, INTERACTION_KINDS, PROPER_FUNCS, AtomType, Defaults, FlatTopology,
                    Interaction, MoleculeType, System)
from .reader import check_structure, read_topology

__all__ = ["AtomType", "Defaults", "FlatTopology", "Interaction", "MoleculeType", "System", "INTERACTION_KINDS",
           "PROPER_FUNCS", "IMPROPER_FUNCS", "read_topology", "check_structure"]
