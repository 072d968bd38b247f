"""Quality of backmapped structures against an all-atom reference (the deepBackmap comparison).

``evaluate(reference, candidates, topology, ...)`` streams each trajectory once, frame by frame, and
scores every candidate against the reference with the definitions of the deepBackmap papers
(implemented in ``gmx_dbm.metrics``):

- JSD (natural log) of bond-length, angle, proper- and improper-dihedral histograms pooled over all
  frames and interactions of a kind, also split by atom-type tuple;
- RDFs of non-bonded pairs (pairs within 3 bonds excluded) per element pair, r < 0.8 nm, dr 0.01 nm,
  and the deviation integral |g_ref - g| dr (the published number is the carbon-carbon one);
- LJ energy per molecule (histograms); clashes (pairs more than two bonds apart closer than 0.1 nm,
  whatever the force field excludes) and deformed rings per frame (``gmx_dbm.quality``);
- energies per term, mean per frame, from the torch ``ForceField`` and optionally from
  ``gmx mdrun -rerun`` (reaction field eps_rf 2.5, 1.0 nm cut-offs, no dispersion correction).

Frames are never paired across files: all statistics are pooled, so files may hold different frames
(e.g. a backmapped trajectory shifted by one frame against its reference). The reference is also split
into its even and odd frames and scored against itself: that "floor" is the sampling noise.

Modules: ``statistics`` (per-trajectory accumulation and scores), ``plots``, ``report`` (JSON and the
terminal table), ``rerun`` (GROMACS energies). The per-frame quality flags that backmap logs live in
``gmx_dbm.quality``.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from .. import metrics
from ..errors import InputError, OutputError, TrajectoryError
from ..io import AtomInfo, read_frames, write_frames
from ..io.safe import check_writable
from ..topology import check_structure, read_topology
from ..quality import RING_TOLERANCE
from .plots import write_plots
from .report import TABLE_ENERGIES, format_table, labels, write_json
from .rerun import gromacs_energies
from .statistics import KINDS, Evaluator, TrajectoryStats, check_names, floor, score, summary

__all__ = ["evaluate", "format_table", "Evaluator", "TrajectoryStats", "check_names", "floor", "score",
           "summary", "gromacs_energies", "write_plots", "write_json", "KINDS", "TABLE_ENERGIES"]

log = logging.getLogger(__name__)


def evaluate(reference, candidates, topology, structure=None, report_dir=None, json_path=None,
             rerun: bool = False, mdp=None, defines=None, include_dirs=None, energies: bool = True,
             plots: bool = True, device: str = "cpu") -> dict:
    """Score ``candidates`` (.xtc/.gro/.pdb paths) against ``reference`` with the all-atom ``topology``.
    Returns the report (see the module doc); writes JSON (``json_path``) and PNG plots + report.json
    (``report_dir``) atomically."""
    from ..energy import read_mdp_settings
    from ..ff.forcefield import NonbondedSettings

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
    from ..devices import resolve_device
    ev = Evaluator(system, settings, energies=energies, device=resolve_device(device, where="--device"))
    if structure:
        fr = next(iter(read_frames(structure)))
        check_structure(system, fr.n_atoms, structure)
        check_names(fr, ev.flat, structure)
    if rerun:
        from ..gromacs import find_gmx
        find_gmx()  # fail before the long part
    ref = ev.trajectory(reference, "reference")
    cands = [ev.trajectory(p, lab) for p, lab in zip(candidates, labels(candidates))]
    result = {"reference": {**summary(ref), "floor": floor(ref)},
              "candidates": {c.label: {**score(ref, c), **summary(c)} for c in cands},
              "settings": {"cutoff_nm": settings.cutoff, "vdw_modifier": settings.modifier,
                           "coulomb": settings.coulomb, "epsilon_rf": settings.epsilon_rf,
                           "rdf_rmax_nm": ev.rdf_rmax, "rdf_dr_nm": ev.rdf_dr,
                           "rdf_excluded_bonds": metrics.RDF_EXCL_BONDS, "clash_nm": metrics.CLASH_DISTANCE,
                           "clash_rule": "pairs more than two bonds apart, force-field exclusions included",
                           "ring_tolerance": RING_TOLERANCE,
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
        write_json(report_dir / "report.json", result)
    if json_path:
        write_json(json_path, result)
    return result
