"""Per-frame quality flags of generated structures: clashes, deformed rings, energies per term.

Used by backmap (one log line per frame, warnings against the model card's reference statistics; the
beads of deformed rings and of clashes the force field cannot see are redrawn) and by training (the
reference statistics stored in a model card). Definitions:

- clash: two atoms closer than 0.1 nm that are more than two bonds apart, whatever the force field
  excludes (a collapsed phenyl ring puts atoms three bonds apart on top of each other, and those pairs
  are excluded from the non-bonded terms, so neither the energies nor the thermalisation see them);
- deformed ring: a ring of the bond graph (3-8 atoms) with a pair of its atoms more than
  ``RING_TOLERANCE`` off its distance in the ideal planar ring (regular polygon with the ring's mean
  equilibrium bond length).
"""
from __future__ import annotations

import logging

import networkx as nx
import numpy as np

from . import metrics
from .geometry import minimum_image
from .neighbors import periodic_pairs

log = logging.getLogger(__name__)

QUALITY_STD_FLOOR = 0.02  # kJ/mol per atom
# the energies the quality tables report (evaluate) and training validates: (label, force-field terms summed)
TABLE_ENERGIES = (("angle E", ("angle",)), ("improper E", ("improper",)), ("LJ E", ("lj_sr", "lj_14")))
RING_SIZES = range(3, 9)
# relative: thermal fluctuations of sPS ring distances stay below 6% (453 K reference); after the
# generator's Gibbs sweeps 99% of ring distances are within 11% and the thermalisation corrects those; a
# folded ring (atoms three bonds apart at 0.06-0.09 nm) is 60-75% off
RING_TOLERANCE = 0.35


class StructureChecks:
    """Clash and ring tables of one topology, built once; ``clashes`` and ``deformed_rings`` per frame."""

    def __init__(self, flat):
        self.n_atoms = flat.n_atoms
        bonds, b0 = flat.bond_list()
        self.near_keys = metrics.pairs_within_bonds(bonds, self.n_atoms, metrics.CLASH_BONDS)
        # rings: one cycle basis per molecule graph; distances of every ring pair in the ideal polygon
        g = nx.Graph()
        g.add_edges_from(map(tuple, bonds))
        length = {tuple(sorted(map(int, e))): float(b) for e, b in zip(bonds, b0)}
        pi, pj, ideal, ring_of = [], [], [], []
        self.rings = []
        for cycle in sorted(nx.cycle_basis(g), key=min):   # rings in topology order
            n = len(cycle)
            if n not in RING_SIZES:
                continue
            ring = _ring_order(g, cycle)
            b = np.mean([length.get(tuple(sorted((ring[k], ring[(k + 1) % n]))), 0.14) for k in range(n)])
            for a in range(n):
                for c in range(a + 1, n):
                    k = min(c - a, n - (c - a))
                    pi.append(ring[a])
                    pj.append(ring[c])
                    ring_of.append(len(self.rings))
                    ideal.append(b * np.sin(np.pi * k / n) / np.sin(np.pi / n))
            self.rings.append(np.asarray(ring, dtype=np.int64))
        self.ring_i = np.asarray(pi, dtype=np.int64)
        self.ring_j = np.asarray(pj, dtype=np.int64)
        self.ring_ideal = np.asarray(ideal, dtype=np.float64)
        self.ring_of = np.asarray(ring_of, dtype=np.int64)

    def clash_pairs(self, positions, box) -> tuple:
        """(i, j, d) of the clashing pairs of one frame."""
        i, j, d = periodic_pairs(np.asarray(positions, dtype=np.float64), np.asarray(box, dtype=np.float64),
                                 metrics.CLASH_DISTANCE)
        keep = ~metrics.in_keys(i, j, self.n_atoms, self.near_keys)
        return i[keep], j[keep], d[keep]

    def clashes(self, positions, box) -> int:
        return len(self.clash_pairs(positions, box)[0])

    def deformed_rings(self, positions, box) -> np.ndarray:
        """Indices into ``rings`` of the rings off their ideal shape in one frame."""
        if not len(self.ring_i):
            return np.zeros(0, dtype=np.int64)
        x = np.asarray(positions, dtype=np.float64)
        d = np.linalg.norm(minimum_image(x[self.ring_j] - x[self.ring_i], box), axis=-1)
        bad = np.abs(d - self.ring_ideal) > RING_TOLERANCE * self.ring_ideal
        return np.unique(self.ring_of[bad])

    def atoms_to_redraw(self, positions, box, excluded_keys) -> np.ndarray:
        """Atoms of deformed rings and of clashing pairs that the force field excludes (the
        thermalisation cannot separate those): what backmap redraws."""
        out = [self.rings[k] for k in self.deformed_rings(positions, box)]
        i, j, _ = self.clash_pairs(positions, box)
        hidden = metrics.in_keys(i, j, self.n_atoms, excluded_keys)
        out += [i[hidden], j[hidden]]
        return np.unique(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def _ring_order(g, cycle) -> list:
    """The atoms of a cycle in the order they are bonded around it."""
    members = set(cycle)
    ring = [cycle[0]]
    prev = None
    while len(ring) < len(cycle):
        nxt = [n for n in g.neighbors(ring[-1]) if n in members and n != prev and n not in ring]
        if not nxt:
            return list(cycle)
        prev = ring[-1]
        ring.append(nxt[0])
    return ring


def exclusion_keys(flat) -> np.ndarray:
    return metrics.pair_keys(flat.exclusions, flat.n_atoms)


def frame_report(flat, positions, box, forcefield, checks: StructureChecks | None = None) -> dict:
    """Quality numbers of one frame: {'clashes': int, 'deformed_rings': int, 'energy': {term: kJ/mol},
    'energy_per_atom': {term: kJ/mol per atom}}."""
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    checks = checks or StructureChecks(flat)
    energy = forcefield.energies(positions, box)
    return {"clashes": checks.clashes(positions, box),
            "deformed_rings": int(len(checks.deformed_rings(positions, box))), "energy": energy,
            "energy_per_atom": {k: v / flat.n_atoms for k, v in energy.items()}}


def reference_statistics(flat, frames_positions, boxes, forcefield=None, max_frames: int | None = 32) -> dict:
    """Mean and standard deviation over reference frames of each energy term per atom and of the clash
    count, for a model card ('reference_stats'): {'n_frames', 'unit', 'terms': {term: {'mean', 'std'}},
    'clashes': {'mean', 'std'}}. At most ``max_frames`` frames, evenly spaced, are used."""
    from .ff.forcefield import ForceField

    pos = [np.asarray(p, dtype=np.float64) for p in frames_positions]
    bx = [np.asarray(b, dtype=np.float64) for b in boxes]
    if len(pos) != len(bx) or not pos:
        raise ValueError(f"need as many boxes as frames (>= 1), got {len(pos)} frames and {len(bx)} boxes")
    if max_frames and len(pos) > max_frames:
        pick = np.unique(np.linspace(0, len(pos) - 1, max_frames).round().astype(int))
        pos, bx = [pos[k] for k in pick], [bx[k] for k in pick]
    ff = forcefield or ForceField(flat)
    checks = StructureChecks(flat)
    reports = [frame_report(flat, p, b, ff, checks) for p, b in zip(pos, bx)]
    terms = list(reports[0]["energy_per_atom"])
    stats = {t: {"mean": float(np.mean([r["energy_per_atom"][t] for r in reports])),
                 "std": float(np.std([r["energy_per_atom"][t] for r in reports]))} for t in terms}
    cl = [r["clashes"] for r in reports]
    return {"n_frames": len(reports), "n_atoms": int(flat.n_atoms), "unit": "kJ/mol per atom",
            "terms": stats, "clashes": {"mean": float(np.mean(cl)), "std": float(np.std(cl))}}


def pool_statistics(parts: list) -> dict | None:
    """Combine ``reference_statistics`` of several systems (a transferable model's data sets) into one:
    frame-weighted means, standard deviations of the pooled per-frame values (spread between systems
    included)."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    w = np.array([p["n_frames"] for p in parts], dtype=np.float64)
    w = w / w.sum()

    def pool(stats):
        m = np.array([s["mean"] for s in stats])
        v = np.array([s["std"] ** 2 for s in stats])
        mean = float((w * m).sum())
        return {"mean": mean, "std": float(np.sqrt((w * (v + (m - mean) ** 2)).sum()))}
    terms = [t for t in parts[0]["terms"] if all(t in p["terms"] for p in parts)]
    return {"n_frames": int(sum(p["n_frames"] for p in parts)), "unit": parts[0]["unit"],
            "systems": len(parts), "terms": {t: pool([p["terms"][t] for p in parts]) for t in terms},
            "clashes": pool([p["clashes"] for p in parts])}


def quality_warnings(report: dict, reference_stats: dict | None, n_std: float = 5.0) -> list:
    """Messages for a ``frame_report``: clashes and deformed rings, and energy terms more than ``n_std``
    standard deviations from the reference statistics. Frame-to-frame spreads of a melt are tiny (0.04
    kJ/mol/atom for sPS angles), so the standard deviation is floored at 10% of the mean and at 0.02
    kJ/mol per atom: a frame is flagged only when a term is off by half its reference value or more,
    which a change of temperature (453 K frames, 568 K training) does not reach, and never for a term
    of a few hundredths of kJ/mol per atom (sPS reaction-field Coulomb: -0.019 in the 568 K training
    frames, -0.03 at 453 K, -0.103 in the structure the example was mapped from)."""
    out = []
    if report.get("clashes"):
        out.append(f"clashes {report['clashes']} atom pairs closer than {metrics.CLASH_DISTANCE:g} nm")
    if report.get("deformed_rings"):
        out.append(f"rings {report['deformed_rings']} deformed (atoms off the ideal ring shape by more than "
                   f"{RING_TOLERANCE:.0%})")
    if not reference_stats or "terms" not in reference_stats:
        return out
    for term, st in reference_stats["terms"].items():
        if term not in report["energy_per_atom"]:
            continue
        value = report["energy_per_atom"][term]
        scale = max(float(st["std"]), 0.1 * abs(float(st["mean"])), QUALITY_STD_FLOOR)
        z = (value - float(st["mean"])) / scale
        if abs(z) > n_std:
            out.append(f"{term} {value:.4g} kJ/mol/atom is {z:+.1f} std from the reference "
                       f"({float(st['mean']):.4g} +- {float(st['std']):.2g})")
    return out


class FrameQuality:
    """Per-frame quality flags: after each generated frame, one INFO line with the clashes, deformed
    rings and the energy per term (kJ/mol per atom), and a WARNING for each problem and each term more
    than ``n_std`` standard deviations from the model card's ``reference_stats`` (when it has them)."""

    def __init__(self, flat, reference_stats: dict | None = None, n_std: float = 5.0, skip_terms=()):
        from .ff.forcefield import ForceField
        self.flat = flat
        self.skip_terms = set(skip_terms)
        self.forcefield = ForceField(flat)
        self.checks = StructureChecks(flat)
        self.stats = reference_stats
        self.n_std = n_std
        if not self.stats:
            log.info("the model card has no reference statistics: frames are not checked against them")

    def __call__(self, index: int, positions, box) -> dict:
        rep = frame_report(self.flat, positions, box, self.forcefield, self.checks)
        per_atom = " ".join(f"{k} {v:.4g}" for k, v in rep["energy_per_atom"].items())
        log.info("frame %d quality: %d clashes (< %g nm), %d deformed rings; energy per atom (kJ/mol): %s",
                 index, rep["clashes"], metrics.CLASH_DISTANCE, rep["deformed_rings"], per_atom)
        for msg in quality_warnings(rep, self.stats, self.n_std):
            if msg.split(" ", 1)[0] not in self.skip_terms:
                log.warning("frame %d: %s", index, msg)
        return {"frame": index, "clashes": rep["clashes"], "deformed_rings": rep["deformed_rings"],
                "energy": rep["energy"]}
