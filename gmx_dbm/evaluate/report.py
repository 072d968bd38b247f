"""The evaluation report: JSON (atomic, finite numbers only) and the terminal table."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_output
from ..quality import TABLE_ENERGIES
from .statistics import KINDS


def labels(paths) -> list:
    labels = []
    for p in paths:
        lab = Path(p).stem
        if lab in labels or lab == "reference":
            lab = str(p)
        labels.append(lab)
    return labels


def write_json(path, data) -> None:
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
    cols = ["bond JSD", "angle JSD", "proper JSD", "improper JSD", "RDF dev", "clashes/fr", "rings/fr"] + \
        [name for name, _ in TABLE_ENERGIES]
    rows = []

    def energy_cells(d, key):
        e = d.get(key, {})
        return [f"{sum(e[t] for t in terms if t in e):.0f}" if any(t in e for t in terms) else "-"
                for _, terms in TABLE_ENERGIES]

    ref = result["reference"]
    rows.append(["reference", "0", "0", "0", "0", "0", f"{ref['clashes_per_frame']:.1f}",
                 f"{ref.get('deformed_rings_per_frame', 0.0):.1f}", *energy_cells(ref, "energy")])
    fl = ref.get("floor") or {}
    if fl:
        rows.append(["  floor (even/odd)"] + [f"{fl.get(f'{k}_jsd', float('nan')):.4f}" for k in KINDS] +
                    [f"{fl['rdf_dev']:.4f}", "", "", "", "", ""])
    if "energy_gromacs" in ref:
        rows.append(["  gmx rerun", "", "", "", "", "", "", "", *energy_cells(ref, "energy_gromacs")])
    for lab, c in result["candidates"].items():
        rows.append([lab] + [f"{c.get(f'{k}_jsd', float('nan')):.4f}" for k in KINDS] +
                    [f"{c['rdf_dev']:.4f}", f"{c['clashes_per_frame']:.1f}",
                     f"{c.get('deformed_rings_per_frame', 0.0):.1f}", *energy_cells(c, "energy")])
        if "energy_gromacs" in c:
            rows.append(["  gmx rerun", "", "", "", "", "", "", "", *energy_cells(c, "energy_gromacs")])
    w0 = max(len(r[0]) for r in rows) + 2
    head = f"{'':<{w0}}" + "".join(f"{c:>13s}" for c in cols)
    lines = [head] + [f"{r[0]:<{w0}}" + "".join(f"{v:>13s}" for v in r[1:]) for r in rows]
    lines.append("JSD: natural log, pooled histograms; RDF dev: integral |g_ref - g| dr of non-bonded C-C pairs "
                 "(nm); clashes: pairs > 2 bonds apart < 0.1 nm; rings: deformed rings; energies: torch force "
                 "field, kJ/mol per frame")
    return "\n".join(lines)
