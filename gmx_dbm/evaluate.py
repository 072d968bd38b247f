"""Quality of backmapped structures against an all-atom reference (the deepBackmap comparison).

``evaluate(reference, candidates, topology, ...)`` streams each trajectory once, frame by frame, and
scores every candidate against the reference with the definitions of ``/shared/design/METHOD.md``
(implemented in ``gmx_dbm.metrics``):

- JSD (natural log) of bond-length, angle, proper- and improper-dihedral histograms pooled over all
  frames and interactions of a kind, also split by atom-type tuple;
- RDFs of non-bonded pairs (pairs within 3 bonds excluded) per element pair, r < 0.8 nm, dr 0.01 nm,
  and the deviation integral |g_ref - g| dr (the published number is the carbon-carbon one);
- LJ energy per molecule (histograms), clashes (non-excluded pairs closer than 0.1 nm) per frame;
- energies per term, mean per frame, from the torch ``ForceField`` and optionally from
  ``gmx mdrun -rerun`` (reaction field eps_rf 2.5, 1.0 nm cut-offs, no dispersion correction).

Frames are never paired across files: all statistics are pooled, so files may hold different frames
(e.g. a backmapped trajectory shifted by one frame against its reference). The reference is also split
into its even and odd frames and scored against itself: that "floor" is the sampling noise.

``frame_report`` / ``reference_statistics`` / ``quality_warnings`` are the per-frame quality flags that
``gmx_dbm.backmap`` logs and that the training code stores in a model card.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .errors import InputError, OutputError, TrajectoryError
from .io import AtomInfo, Frame, atomic_output, read_frames, write_frames
from .io.safe import check_writable
from .io.topology import check_structure, read_topology

log = logging.getLogger(__name__)

KINDS = ("bond", "angle", "proper", "improper")
TABLE_ENERGIES = (("angle E", ("angle",)), ("improper E", ("improper",)), ("LJ E", ("lj_sr", "lj_14")))


# =========================================================================== fast energies
def _ff_arrays(forcefield) -> dict:
    """numpy copies of the force field's non-bonded tables (cached on the module instance)."""
    cache = getattr(forcefield, "_gmx_dbm_numpy", None)
    if cache is None:
        cache = {"type_index": forcefield.type_index.numpy(), "c6": forcefield.c6.double().numpy(),
                 "c12": forcefield.c12.double().numpy(), "charges": forcefield.charges.double().numpy()}
        forcefield._gmx_dbm_numpy = cache
    return cache


def pair_energies(forcefield, i, j, d) -> tuple:
    """Short-range LJ and reaction-field Coulomb energies (kJ/mol) of non-excluded pairs (i, j) at
    distances d (numpy), with the force field's parameters and settings, the forms of its non-bonded
    kernel (potential-shift LJ, GROMACS reaction field). Returns (lj per pair, coulomb per pair)."""
    s = forcefield.settings
    a = _ff_arrays(forcefield)
    ti, tj = a["type_index"][i], a["type_index"][j]
    lj = metrics.lj_pair_energies(d, a["c6"][ti, tj], a["c12"][ti, tj], s.cutoff,
                                  shift=s.modifier == "potential-shift")
    if not forcefield.has_charges:
        return lj, np.zeros_like(lj)
    q = a["charges"]
    qq = q[i] * q[j] * forcefield.f_elec
    coul = qq * (1.0 / d + forcefield.k_rf * d * d - forcefield.c_rf)
    return lj, np.where(d < s.rcoulomb, coul, 0.0)


@contextlib.contextmanager
def _single_thread():
    """The force field's tensors here are small (~10^4 interactions): torch's thread pool costs more
    than it gains (2-3x more CPU time per frame on 2 busy cores), so use one thread meanwhile."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


@contextlib.contextmanager
def _precomputed_nonbonded(forcefield, e_lj: float, e_c: float):
    """Let ``forcefield`` use already computed short-range sums (energies only, zero gradients) instead
    of its own pair search: ``ForceField`` has no energies-only entry point yet, and its pair loop costs
    seconds per 5832-atom frame. Falls back to the full computation if its internals changed."""
    if not hasattr(forcefield, "_nonbonded_frame"):
        yield False
        return

    def frame(pos, box):
        z = torch.zeros_like(pos)
        return (torch.tensor(e_lj, dtype=pos.dtype), torch.tensor(e_c, dtype=pos.dtype), z, z)
    forcefield._nonbonded_frame = frame
    try:
        yield True
    finally:
        del forcefield._nonbonded_frame


def _ff_exclusion_keys(forcefield) -> np.ndarray:
    keys = getattr(forcefield, "excl_keys", None)
    if keys is not None:
        return keys.numpy()
    return metrics.pair_keys(forcefield.excl.numpy(), forcefield.n_atoms)


def nonbonded_pairs(forcefield, positions, box, cutoff: float | None = None) -> tuple:
    """Non-excluded pairs (i, j, d) within the force field's cut-offs (or ``cutoff`` if longer)."""
    s = forcefield.settings
    rmax = max(s.cutoff, s.rcoulomb if forcefield.has_charges else 0.0, cutoff or 0.0)
    i, j, d = metrics.periodic_pairs(positions, box, rmax)
    keep = ~metrics.in_keys(i, j, forcefield.n_atoms, _ff_exclusion_keys(forcefield))
    return i[keep], j[keep], d[keep]


def forcefield_energies(forcefield, positions, box, pairs=None, pair_sums=None) -> dict:
    """{term: kJ/mol} of one frame from a ``ForceField`` (no gradients). The short-range non-bonded part
    comes from the k-d tree pair search: ``pairs`` = non-excluded (i, j, d) within the cut-offs
    (``nonbonded_pairs``) or ``pair_sums`` = their (LJ, Coulomb) sums, if already at hand."""
    x = torch.as_tensor(np.asarray(positions), dtype=forcefield.dtype)[None]
    b = torch.as_tensor(np.asarray(box), dtype=forcefield.dtype)[None]
    if pair_sums is None:
        try:
            if pairs is None:
                pairs = nonbonded_pairs(forcefield, positions, box)
            lj, c = pair_energies(forcefield, *pairs)
            pair_sums = (float(lj.sum()), float(c.sum()))
        except ValueError:  # box shorter than twice the cut-off: the force field's own search decides
            pair_sums = None
    if pair_sums is not None:
        with torch.no_grad(), _single_thread(), _precomputed_nonbonded(forcefield, *pair_sums):
            e = forcefield(x, b)
    else:
        with torch.no_grad():
            e = forcefield(x, b)
    return {k: float(v[0]) for k, v in e.items()}


# =========================================================================== per-frame quality flags
def _exclusion_keys(flat) -> np.ndarray:
    cache = getattr(flat, "_gmx_dbm_exclusion_keys", None)
    if cache is None:
        cache = metrics.pair_keys(flat.exclusions, flat.n_atoms)
        try:
            object.__setattr__(flat, "_gmx_dbm_exclusion_keys", cache)
        except (AttributeError, TypeError):  # pragma: no cover - frozen/slotted objects
            pass
    return cache


def frame_clashes(flat, positions, box, distance: float = metrics.CLASH_DISTANCE) -> int:
    """Non-excluded atom pairs closer than ``distance`` nm in one frame."""
    i, j, d = metrics.periodic_pairs(positions, box, distance)
    return metrics.count_clashes(i, j, d, flat.n_atoms, _exclusion_keys(flat), distance)


def frame_report(flat, positions, box, forcefield) -> dict:
    """Quality numbers of one generated frame: {'clashes': int (non-excluded pairs < 0.1 nm),
    'energy': {term: kJ/mol}, 'energy_per_atom': {term: kJ/mol per atom}}. One pair search serves both;
    about 0.5 s for 5832 atoms on 2 cores."""
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    try:
        pairs = nonbonded_pairs(forcefield, positions, box)
        clashes = int((pairs[2] < metrics.CLASH_DISTANCE).sum())
    except ValueError:  # a box shorter than twice the cut-off
        pairs, clashes = None, frame_clashes(flat, positions, box)
    energy = forcefield_energies(forcefield, positions, box, pairs)
    return {"clashes": clashes, "energy": energy,
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
    reports = [frame_report(flat, p, b, ff) for p, b in zip(pos, bx)]
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


QUALITY_STD_FLOOR = 0.02  # kJ/mol per atom


def quality_warnings(report: dict, reference_stats: dict | None, n_std: float = 5.0) -> list:
    """Messages for the energy terms of a ``frame_report`` that lie more than ``n_std`` standard
    deviations from the reference statistics. Frame-to-frame spreads of a melt are tiny (0.04 kJ/mol/atom
    for sPS angles), so the standard deviation is floored at 10% of the mean and at 0.02 kJ/mol per atom:
    a frame is flagged only when a term is off by half its reference value or more, which a change of
    temperature (453 K frames, 568 K training) does not reach, and never for a term of a few hundredths
    of kJ/mol per atom (sPS reaction-field Coulomb, measured: -0.019 in the 568 K training frames, -0.03
    at 453 K, -0.103 in the structure the example was mapped from, whose backmapping gives -0.091)."""
    if not reference_stats or "terms" not in reference_stats:
        return []
    out = []
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


# =========================================================================== trajectory statistics
@dataclass
class TrajectoryStats:
    label: str
    path: str
    bonded: list = field(default_factory=list)     # BondedHistograms per half (even, odd frames)
    rdf: list = field(default_factory=list)        # RDFAccumulator per half
    lj_per_molecule: list = field(default_factory=list)  # per frame (n_mols,)
    clashes: list = field(default_factory=list)
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
                 rdf_dr: float = metrics.RDF_DR):
        from .ff.forcefield import ForceField, NonbondedSettings

        self.system = system
        self.flat = flat = system.flat()
        self.settings = settings or NonbondedSettings()
        self.n = flat.n_atoms
        self.excl = _exclusion_keys(flat)
        bonds = [idx for idx, _ in flat.bonded["bonds"].values()]
        bonds = np.concatenate(bonds) if bonds else np.zeros((0, 2), dtype=np.int64)
        self.rdf_excl = metrics.pairs_within_bonds(bonds, self.n, metrics.RDF_EXCL_BONDS)
        self.elements = metrics.elements(flat.names, flat.masses)
        self.rdf_rmax, self.rdf_dr = rdf_rmax, rdf_dr
        self.n_mols = int(flat.mol_index.max()) + 1 if self.n else 0
        # exclusions looked up only inside molecules when they all are intramolecular (always so for
        # bonded ones; explicit [ exclusions ] are per moleculetype too)
        self.mol_of_excl = self.intra_rdf = np.asarray(flat.mol_index)
        if len(flat.exclusions) and np.any(flat.mol_index[flat.exclusions[:, 0]] != flat.mol_index[flat.exclusions[:, 1]]):
            self.mol_of_excl = None  # pragma: no cover - cannot come from a GROMACS topology
        self.forcefield = ForceField(flat, self.settings)
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
            i, j, d = metrics.periodic_pairs(pos, box, self.cutoff)
        except ValueError as exc:
            raise TrajectoryError(f"frame {st.n_frames}: box too small for the analysis cut-off: {exc}",
                                  path=path) from None
        st.rdf[half].add(i, j, d, abs(np.linalg.det(box)))
        # non-excluded pairs within the force-field cut-offs: LJ per molecule, clashes, energies
        ff = self.forcefield
        intra = None if self.mol_of_excl is None else self.mol_of_excl[i] == self.mol_of_excl[j]
        nb = (d < self.nb_cutoff) & ~metrics.in_keys(i, j, self.n, self.excl, intra)
        ii, jj, dd = i[nb], j[nb], d[nb]
        lj, coul = pair_energies(ff, ii, jj, dd)
        st.lj_per_molecule.append(metrics.per_molecule(ii, jj, lj, self.flat.mol_index, self.n_mols))
        st.clashes.append(int((dd < metrics.CLASH_DISTANCE).sum()))
        if self.energies:
            st.energies.append(forcefield_energies(ff, pos, box, pair_sums=(float(lj.sum()), float(coul.sum()))))

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
    if frame.atoms is None or not len(frame.atoms.names):
        return
    names = np.asarray([str(n).strip() for n in frame.atoms.names])
    bad = np.nonzero(names != np.asarray([str(n).strip() for n in flat.names]))[0]
    if len(bad):
        b = int(bad[0])
        raise TrajectoryError(f"atom {b + 1} is named {str(names[b])!r} but the topology has {str(flat.names[b])!r} "
                              f"there ({len(bad)} names differ): atoms must be in topology order",
                              path=path, where=f"frame {index}")


# =========================================================================== scoring
def _energy_keys(energy: dict) -> dict:
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


def _summary(st: TrajectoryStats) -> dict:
    lj = np.concatenate(st.lj_per_molecule) if st.lj_per_molecule else np.zeros(0)
    return {"path": st.path, "frames": st.n_frames, "clashes_per_frame": float(np.mean(st.clashes)),
            "energy": _energy_keys(st.mean_energy()),
            "lj_per_molecule": {"mean": float(lj.mean()) if len(lj) else float("nan"),
                                "std": float(lj.std()) if len(lj) else float("nan")},
            "seconds": st.seconds}


# =========================================================================== GROMACS rerun
def gromacs_energies(top, traj, conf, settings, defines=(), workdir=None) -> dict:
    """Mean per frame of each gmx_dbm energy term from ``gmx grompp`` + ``gmx mdrun -rerun``."""
    from .ff.forcefield import GROMACS_TERMS
    from .gromacs import find_gmx, rerun_energies

    gmx = find_gmx()
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="gmx_dbm_rerun_")) if own else Path(workdir)
    terms = rerun_energies(top, conf, workdir, settings=settings, traj=traj, defines=tuple(defines or ()),
                           maxwarn=2, gmx=gmx)
    out = {}
    for key, names in GROMACS_TERMS.items():
        present = [terms[n] for n in names if n in terms]
        if present:
            out[key] = float(np.mean(np.sum(present, axis=0)))
    out["frames"] = int(len(next(iter(terms.values())))) if terms else 0
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# =========================================================================== plots
def _labelled(ref: TrajectoryStats, cands: list):
    return [("reference", ref)] + [(c.label, c) for c in cands]


def write_plots(report_dir, ref: TrajectoryStats, cands: list) -> list:
    """PNG figures (matplotlib, Agg): bonded distributions, RDFs, LJ energy per molecule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir = Path(report_dir)
    written = []
    units = {"bond": "bond length (nm)", "angle": "angle (deg)", "proper": "proper dihedral (deg)",
             "improper": "improper dihedral (deg)"}

    def save(fig, name):
        path = report_dir / name
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written.append(str(path))

    def dist(ax, kind, counts, label, style):
        edges = metrics.BINS[kind]
        centre = 0.5 * (edges[1:] + edges[:-1])
        total = counts.sum()
        ax.plot(centre, counts / total / np.diff(edges) if total else counts, style, label=label, lw=1.2)

    series = _labelled(ref, cands)
    bonded = [(lab, st.all_bonded()) for lab, st in series]
    kinds = [k for k in KINDS if k in bonded[0][1].counts]
    # overview of the four pooled distributions (paper fig. 2/3 style)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for n, (lab, b) in enumerate(bonded):
            dist(ax, kind, b.total(kind), lab, "k-" if n == 0 else "-")
        ax.set_xlabel(units[kind])
        ax.set_ylabel("probability density")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "distributions.png")
    # per kind, one panel per atom-type tuple
    for kind in kinds:
        labels = bonded[0][1].labels[kind]
        ncol = min(4, len(labels))
        nrow = int(np.ceil(len(labels) / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
        for k, tl in enumerate(labels):
            ax = axes[k // ncol][k % ncol]
            for n, (lab, b) in enumerate(bonded):
                dist(ax, kind, b.counts[kind][k], lab, "k-" if n == 0 else "-")
            ax.set_title(tl, fontsize=9)
            ax.set_xlabel(units[kind], fontsize=8)
        for k in range(len(labels), nrow * ncol):
            axes[k // ncol][k % ncol].axis("off")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        save(fig, f"{kind}_by_type.png")
    # RDFs per element pair (C-C first: the published one)
    rdfs = [(lab, st.all_rdf()) for lab, st in series]
    pairs = list(rdfs[0][1].g())
    ncol = min(3, len(pairs))
    nrow = int(np.ceil(len(pairs) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for k, pname in enumerate(pairs):
        ax = axes[k // ncol][k % ncol]
        for n, (lab, acc) in enumerate(rdfs):
            ax.plot(acc.r, acc.g()[pname], "k-" if n == 0 else "-", label=lab, lw=1.2)
        ax.set_title(f"{pname} (non-bonded, > {metrics.RDF_EXCL_BONDS} bonds)", fontsize=9)
        ax.set_xlabel("r (nm)")
        ax.set_ylabel("g(r)")
    for k in range(len(pairs), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "rdf.png")
    # LJ energy per molecule (paper fig. 4 style)
    values = [(lab, np.concatenate(st.lj_per_molecule)) for lab, st in series]
    allv = np.concatenate([v for _, v in values])
    lo, hi = np.percentile(allv, 0.5), np.percentile(allv, 99.5)
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    bins = np.linspace(lo, hi, 61)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for n, (lab, v) in enumerate(values):
        h, _ = np.histogram(v, bins=bins, density=True)
        ax.plot(0.5 * (bins[1:] + bins[:-1]), h, "k-" if n == 0 else "-", label=lab, lw=1.2)
    ax.set_xlabel("LJ energy per molecule (kJ/mol)")
    ax.set_ylabel("probability density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "lj_per_molecule.png")
    return written


# =========================================================================== the command's library call
def _labels(paths) -> list:
    labels = []
    for p in paths:
        lab = Path(p).stem
        if lab in labels or lab == "reference":
            lab = str(p)
        labels.append(lab)
    return labels


def evaluate(reference, candidates, topology, structure=None, report_dir=None, json_path=None,
             rerun: bool = False, mdp=None, defines=None, include_dirs=None, energies: bool = True,
             plots: bool = True) -> dict:
    """Score ``candidates`` (.xtc/.gro/.pdb paths) against ``reference`` with the all-atom ``topology``.
    Returns the report (see the module doc); writes JSON (``json_path``) and PNG plots + report.json
    (``report_dir``) atomically."""
    from .ff.forcefield import NonbondedSettings, read_mdp_settings

    candidates = [candidates] if isinstance(candidates, (str, Path)) else list(candidates)
    if not candidates:
        raise InputError("no candidate trajectories to evaluate (give -f at least once)")
    for p in [reference, *candidates] + ([structure] if structure else []):
        if not Path(p).is_file():
            raise TrajectoryError("file not found (expected a .gro, .xtc or .pdb structure/trajectory)", path=p)
    if json_path:
        check_writable(json_path)
    if report_dir:
        report_dir = Path(report_dir)
        if report_dir.exists() and not report_dir.is_dir():
            raise OutputError(f"{report_dir}: exists and is not a folder (expected the report folder)")
        check_writable(report_dir / "report.json" if report_dir.is_dir() else report_dir)
    system = read_topology(topology, defines=defines, include_dirs=include_dirs)
    settings = read_mdp_settings(mdp) if mdp else NonbondedSettings()
    ev = Evaluator(system, settings, energies=energies)
    if structure:
        fr = next(iter(read_frames(structure)))
        check_structure(system, fr.n_atoms, structure)
        check_names(fr, ev.flat, structure)
    if rerun:
        from .gromacs import find_gmx
        find_gmx()  # fail before the long part
    ref = ev.trajectory(reference, "reference")
    cands = [ev.trajectory(p, lab) for p, lab in zip(candidates, _labels(candidates))]
    result = {"reference": {**_summary(ref), "floor": floor(ref)},
              "candidates": {c.label: {**score(ref, c), **_summary(c)} for c in cands},
              "settings": {"cutoff_nm": settings.cutoff, "vdw_modifier": settings.modifier,
                           "coulomb": settings.coulomb, "epsilon_rf": settings.epsilon_rf,
                           "rdf_rmax_nm": ev.rdf_rmax, "rdf_dr_nm": ev.rdf_dr,
                           "rdf_excluded_bonds": metrics.RDF_EXCL_BONDS, "clash_nm": metrics.CLASH_DISTANCE,
                           "jsd": "natural log; bonds 0.001 nm over 0.08-0.20, angles 1 deg over 60-180, "
                                  "dihedrals 2 deg over -180..180",
                           "energy": "mean per frame, kJ/mol"},
              "topology": str(topology)}
    if rerun:
        with tempfile.TemporaryDirectory(prefix="gmx_dbm_eval_") as tmp:
            conf = structure
            if conf is None:
                first = next(iter(read_frames(reference, n_atoms=ev.n)))
                conf = Path(tmp) / "conf.gro"
                write_frames(conf, AtomInfo.from_topology(ev.flat), [first])
            for name, st in [("reference", ref)] + [(c.label, c) for c in cands]:
                t0 = time.perf_counter()
                e = gromacs_energies(topology, st.path, conf, settings, defines)
                target = result["reference"] if name == "reference" else result["candidates"][name]
                target["energy_gromacs"] = e
                log.info("gmx mdrun -rerun %s: %.1f s", st.path, time.perf_counter() - t0)
    if report_dir:
        report_dir.mkdir(exist_ok=True)
        if plots:
            result["plots"] = write_plots(report_dir, ref, cands)
        _write_json(report_dir / "report.json", result)
    if json_path:
        _write_json(json_path, result)
    return result


def _write_json(path, data) -> None:
    import json

    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.floating, float)):
            return None if not np.isfinite(o) else float(o)
        if isinstance(o, np.integer):
            return int(o)
        return o
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(clean(data), fh, indent=1)


def format_table(result: dict) -> str:
    """The terminal table: one row per trajectory (reference, its half-vs-half floor, candidates)."""
    cols = ["bond JSD", "angle JSD", "proper JSD", "improper JSD", "RDF dev", "clashes/fr"] + \
        [name for name, _ in TABLE_ENERGIES]
    rows = []

    def energy_cells(d, key):
        e = d.get(key, {})
        return [f"{sum(e[t] for t in terms if t in e):.0f}" if any(t in e for t in terms) else "-"
                for _, terms in TABLE_ENERGIES]

    ref = result["reference"]
    rows.append(["reference", "0", "0", "0", "0", "0", f"{ref['clashes_per_frame']:.1f}", *energy_cells(ref, "energy")])
    fl = ref.get("floor") or {}
    if fl:
        rows.append(["  floor (even/odd)"] + [f"{fl.get(f'{k}_jsd', float('nan')):.4f}" for k in KINDS] +
                    [f"{fl['rdf_dev']:.4f}", "", "", "", ""])
    if "energy_gromacs" in ref:
        rows.append(["  gmx rerun", "", "", "", "", "", "", *energy_cells(ref, "energy_gromacs")])
    for lab, c in result["candidates"].items():
        rows.append([lab] + [f"{c.get(f'{k}_jsd', float('nan')):.4f}" for k in KINDS] +
                    [f"{c['rdf_dev']:.4f}", f"{c['clashes_per_frame']:.1f}", *energy_cells(c, "energy")])
        if "energy_gromacs" in c:
            rows.append(["  gmx rerun", "", "", "", "", "", "", *energy_cells(c, "energy_gromacs")])
    w0 = max(len(r[0]) for r in rows) + 2
    head = f"{'':<{w0}}" + "".join(f"{c:>13s}" for c in cols)
    lines = [head] + [f"{r[0]:<{w0}}" + "".join(f"{v:>13s}" for v in r[1:]) for r in rows]
    lines.append("JSD: natural log, pooled histograms; RDF dev: integral |g_ref - g| dr of non-bonded C-C pairs "
                 "(nm); energies: torch force field, kJ/mol per frame")
    return "\n".join(lines)
