"""PNG plots of an evaluation: bonded distributions, RDFs and LJ energy per molecule, reference against
candidates."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics
from ..io import atomic_output
from .statistics import KINDS, TrajectoryStats


def _labelled(ref: TrajectoryStats, cands: list):
    return [("reference", ref)] + [(c.label, c) for c in cands]


def _panels(plt, n: int, max_cols: int, width: float, height: float) -> tuple:
    """A figure with ``n`` panels on a grid of at most ``max_cols`` columns; unused panels hidden."""
    ncol = max(1, min(max_cols, n))
    nrow = max(1, int(np.ceil(n / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    for k in range(n, nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    return fig, axes, ncol


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
        fig, axes, ncol = _panels(plt, len(labels), 4, 3.6, 3.0)
        for k, tl in enumerate(labels):
            ax = axes[k // ncol][k % ncol]
            for n, (lab, b) in enumerate(bonded):
                dist(ax, kind, b.counts[kind][k], lab, "k-" if n == 0 else "-")
            ax.set_title(tl, fontsize=9)
            ax.set_xlabel(units[kind], fontsize=8)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        save(fig, f"{kind}_by_type.png")
    # RDFs per element pair (C-C first: the published one)
    rdfs = [(lab, st.all_rdf()) for lab, st in series]
    pairs = list(rdfs[0][1].g())
    fig, axes, ncol = _panels(plt, len(pairs), 3, 4.2, 3.2)
    for k, pname in enumerate(pairs):
        ax = axes[k // ncol][k % ncol]
        for n, (lab, acc) in enumerate(rdfs):
            ax.plot(acc.r, acc.g()[pname], "k-" if n == 0 else "-", label=lab, lw=1.2)
        ax.set_title(f"{pname} (non-bonded, > {metrics.RDF_EXCL_BONDS} bonds)", fontsize=9)
        ax.set_xlabel("r (nm)")
        ax.set_ylabel("g(r)")
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
