"""Trajectory statistics of the deepBackmap comparison and their scores.

Each trajectory is streamed once; every frame adds to pooled bonded histograms, RDFs (even and odd frames
kept apart, for the sampling-noise floor), LJ energy per molecule, clashes and deformed rings
(``gmx_dbm.quality``) and energies per term from the torch ``ForceField``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..errors import InputError, TrajectoryError
from ..neighbors import periodic_pairs
from ..io import Frame, read_frames
from ..io import check_names as io_check_names
from ..quality import StructureChecks

log = logging.getLogger(__name__)

KINDS = ("bond", "angle", "proper", "improper")


@dataclass
class TrajectoryStats:
    label: str
    path: str
    bonded: list = field(default_factory=list)     # BondedHistograms per half (even, odd frames)
    rdf: list = field(default_factory=list)        # RDFAccumulator per half
    lj_per_molecule: list = field(default_factory=list)  # per frame (n_mols,)
    clashes: list = field(default_factory=list)
    deformed_rings: list = field(default_factory=list)
    energies: list = field(default_factory=list)   # per frame {term: kJ/mol}
    seconds: float = 0.0

    @property
    def n_frames(self) -> int:
        return len(self.clashes)

    def all_bonded(self):
        return self.bonded[0].merged(self.bonded[1])

    def all_rdf(self):
        return self.rdf[0].merged(self.rdf[1])

    def mean_energy(self) -> dict:
        if not self.energies:
            return {}
        return {k: float(np.mean([e[k] for e in self.energies])) for k in self.energies[0]}


class Evaluator:
    """Per-system tables (exclusions, elements, LJ parameters, force field) and the per-frame work."""

    def __init__(self, system, settings=None, energies: bool = True, rdf_rmax: float = metrics.RDF_RMAX,
                 rdf_dr: float = metrics.RDF_DR, device=None):
        from ..ff.forcefield import ForceField, NonbondedSettings

        self.system = system
        self.flat = flat = system.flat()
        self.settings = settings or NonbondedSettings()
        self.n = flat.n_atoms
        self.excl = metrics.pair_keys(flat.exclusions, self.n)
        bonds, _ = flat.bond_list()
        self.rdf_excl = metrics.pairs_within_bonds(bonds, self.n, metrics.RDF_EXCL_BONDS)
        self.checks = StructureChecks(flat)
        self.elements = flat.elements
        self.rdf_rmax, self.rdf_dr = rdf_rmax, rdf_dr
        self.n_mols = int(flat.mol_index.max()) + 1 if self.n else 0
        # exclusions looked up only inside molecules when they all are intramolecular (always so for
        # bonded ones; explicit [ exclusions ] are per moleculetype too)
        self.mol_of_excl = self.intra_rdf = np.asarray(flat.mol_index)
        if len(flat.exclusions) and np.any(flat.mol_index[flat.exclusions[:, 0]] != flat.mol_index[flat.exclusions[:, 1]]):
            self.mol_of_excl = None  # pragma: no cover - cannot come from a GROMACS topology
        self.forcefield = ForceField(flat, self.settings, device=device)
        self.energies = energies
        s = self.settings
        self.nb_cutoff = max(s.cutoff, s.rcoulomb if self.forcefield.has_charges else 0.0)
        self.cutoff = max(self.nb_cutoff, rdf_rmax)

    def new_stats(self, label, path) -> TrajectoryStats:
        return TrajectoryStats(label, str(path),
                               [metrics.BondedHistograms(self.flat), metrics.BondedHistograms(self.flat)],
                               [metrics.RDFAccumulator(self.elements, self.rdf_excl, self.rdf_rmax, self.rdf_dr, self.intra_rdf)
                                for _ in range(2)])

    def add_frame(self, st: TrajectoryStats, pos, box, path=None) -> None:
        half = st.n_frames % 2
        st.bonded[half].add(pos, box)
        try:
            self.forcefield.check_box(box, self.cutoff)
        except InputError as exc:
            raise TrajectoryError(f"frame {st.n_frames}: box too small for the analysis cut-off: {exc.message}",
                                  path=path) from None
        i, j, d = periodic_pairs(pos, box, self.cutoff)
        st.rdf[half].add(i, j, d, abs(np.linalg.det(box)))
        st.clashes.append(metrics.count_clashes(i, j, d, self.n, self.checks.near_keys))
        st.deformed_rings.append(int(len(self.checks.deformed_rings(pos, box))))
        # non-excluded pairs within the force-field cut-offs: LJ per molecule and the energies, from the
        # force field's own pair kernel
        ff = self.forcefield
        intra = None if self.mol_of_excl is None else self.mol_of_excl[i] == self.mol_of_excl[j]
        nb = (d < self.nb_cutoff) & ~metrics.in_keys(i, j, self.n, self.excl, intra)
        ii, jj = torch.from_numpy(i[nb]), torch.from_numpy(j[nb])
        lj, coul = ff.pair_energies(pos, box, ii, jj)
        st.lj_per_molecule.append(metrics.per_molecule(i[nb], j[nb], lj.numpy(), self.flat.mol_index, self.n_mols))
        if self.energies:
            st.energies.append(ff.energies(pos, box, pair_energies=(lj, coul)))

    def trajectory(self, path, label=None) -> TrajectoryStats:
        t0 = time.perf_counter()
        st = self.new_stats(label or Path(path).stem, path)
        for k, fr in enumerate(read_frames(path, n_atoms=self.n)):
            check_names(fr, self.flat, path, k)
            self.add_frame(st, fr.positions, fr.box, path)
        if st.n_frames == 0:
            raise TrajectoryError("contains no frames", path=path)
        st.seconds = time.perf_counter() - t0
        log.info("%s: %d frames in %.1f s", path, st.n_frames, st.seconds)
        return st


def check_names(frame: Frame, flat, path, index: int = 0) -> None:
    """Atom names of a frame that has them (.gro, .pdb) must follow the topology's order."""
    io_check_names(frame, flat.names, path, index, "atom", "the topology")


def energy_keys(energy: dict) -> dict:
    return {k: float(v) for k, v in energy.items()}


def score(ref: TrajectoryStats, cand: TrajectoryStats) -> dict:
    """The comparison of one candidate with the reference (pooled statistics)."""
    b_ref, b = ref.all_bonded(), cand.all_bonded()
    g_ref, g = ref.all_rdf().g(), cand.all_rdf().g()
    out = {k: v for k, v in b.jsd(b_ref).items()}
    out["rdf_dev"] = metrics.rdf_deviation(g_ref.get("C-C", np.zeros(1)), g.get("C-C", np.zeros(1)),
                                           ref.rdf[0].dr) if "C-C" in g_ref else float("nan")
    out["rdf_dev_per_element_pair"] = {k: metrics.rdf_deviation(g_ref[k], g[k], ref.rdf[0].dr) for k in g_ref}
    out["per_type_jsd"] = b.jsd_per_type(b_ref)
    return out


def floor(ref: TrajectoryStats) -> dict:
    """Sampling noise: the reference's even frames scored against its odd frames."""
    if ref.n_frames < 2:
        return {}
    even = TrajectoryStats(ref.label, ref.path, [ref.bonded[0]] * 2, [ref.rdf[0]] * 2)
    odd = TrajectoryStats(ref.label, ref.path, [ref.bonded[1]] * 2, [ref.rdf[1]] * 2)
    s = score(even, odd)
    s.pop("per_type_jsd")
    s["frames"] = [ref.bonded[0].n_frames, ref.bonded[1].n_frames]
    return s


def summary(st: TrajectoryStats) -> dict:
    lj = np.concatenate(st.lj_per_molecule) if st.lj_per_molecule else np.zeros(0)
    return {"path": st.path, "frames": st.n_frames, "clashes_per_frame": float(np.mean(st.clashes)),
            "deformed_rings_per_frame": float(np.mean(st.deformed_rings)) if st.deformed_rings else 0.0,
            "energy": energy_keys(st.mean_energy()),
            "lj_per_molecule": {"mean": float(lj.mean()) if len(lj) else float("nan"),
                                "std": float(lj.std()) if len(lj) else float("nan")},
            "seconds": st.seconds}
