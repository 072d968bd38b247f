"""Learning curves of a training run: the training log (``train_log.jsonl``) drawn as one PNG.

Panels: the adversarial terms, the reconstruction deviation, and for each validation set the JSD per
bonded kind, the relative error of the angle / improper / LJ energies and the clashes of the generated
frame (generator only, no thermalisation; ``Trainer.validate``). A resumed run logs the steps between
its last checkpoint and the interruption twice; the later record of a step wins.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from ..io.safe import discard, temporary_path

_VAL_KEY = re.compile(r"^val(\d+)_(.+)$")


def read_log(path) -> list:
    """The records of a training log, one per step (the last one written), in step order."""
    by_step = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:   # a line cut by a kill mid-write
                continue
            if isinstance(rec, dict) and "step" in rec:
                by_step[int(rec["step"])] = rec
    return [by_step[k] for k in sorted(by_step)]


def curves(records: list) -> dict:
    """{panel: {series: ([steps], [values])}} of the logged numbers, validation series per set."""
    panels: dict = {}

    def add(panel, series, step, value):
        if isinstance(value, (int, float)) and not math.isnan(value):
            xs, ys = panels.setdefault(panel, {}).setdefault(series, ([], []))
            xs.append(step)
            ys.append(float(value))

    for rec in records:
        step = rec["step"]
        for key in ("w_dist", "gp"):
            add("adversarial", key, step, rec.get(key))
        for key in ("rec_rms_nm", "mean_dev_nm"):
            add("deviation from the reference (nm)", key, step, rec.get(key))
        for key, value in rec.items():
            m = _VAL_KEY.match(key)
            if not m:
                continue
            i, name = m.groups()
            if name.endswith("_jsd"):
                add(f"validation {i}: JSD", name[:-4], step, value)
            elif name.startswith("e_") and name.endswith("_rel"):
                add(f"validation {i}: |energy error| / |reference|", name[2:-4], step,
                    None if value is None else abs(value))
            elif name in ("clashes", "deformed_rings"):
                add(f"validation {i}: per frame", name, step, value)
    return panels


def plot_learning_curves(log_path, png_path) -> Path | None:
    """Draw the curves of ``log_path`` into ``png_path`` (replaced in place: it belongs to the run).
    -> the path, or None when there is nothing to draw."""
    log_path, png_path = Path(log_path), Path(png_path)
    panels = curves(read_log(log_path))
    if not panels:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(panels)
    ncol = min(3, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.axis("off")
            continue
        name = names[k]
        for series, (xs, ys) in panels[name].items():
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=series)
        positive = all(y > 0 for xs, ys in panels[name].values() for y in ys)
        if ("JSD" in name or "energy" in name) and positive:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = temporary_path(png_path)
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        discard(tmp)
    return png_path
