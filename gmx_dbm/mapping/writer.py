"""What a mapping does to a topology, as text: a summary per moleculetype (``describe``) and the
expanded per-molecule file (``molecule_mapping_text``) that reads back to the same beads."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .model import SystemMapping


def describe(smap: SystemMapping) -> str:
    """One block per moleculetype in use: count, atoms, beads per type, atoms per bead, units matched."""
    system = smap.system
    counts = Counter()
    for name, count in system.molecules:
        counts[name] += count
    lines = []
    for name, mm in smap.molecules.items():
        mt = system.moleculetypes[name]
        lines.append(f"moleculetype {name}: {counts[name]} molecule(s), {mt.n_atoms} atoms -> {mm.n_beads} beads"
                     f" (mapping: {mm.path})")
        if mm.units is not None:
            how = {u[2] for u in mm.units}
            seq = Counter(u[0] for u in mm.units)
            lines.append(f"  units ({'/'.join(sorted(how))} match, in order): "
                         + " ".join(u[0] for u in mm.units) if len(mm.units) <= 12 else
                         f"  units ({'/'.join(sorted(how))} match): {len(mm.units)}: "
                         + ", ".join(f"{k} x{v}" for k, v in seq.items()))
        by_type = {}
        for b in mm.beads:
            by_type.setdefault(b.type, []).append(len(b.atoms))
        for t, sizes in sorted(by_type.items()):
            lines.append(f"  bead type {t}: {len(sizes)} bead(s), {min(sizes)}-{max(sizes)} atoms each"
                         if min(sizes) != max(sizes) else f"  bead type {t}: {len(sizes)} bead(s), {sizes[0]} atoms each")
        mapped = np.zeros(mt.n_atoms, dtype=bool)
        for b in mm.beads:
            mapped[list(b.atoms)] = True
        lines.append(f"  unmapped atoms: {int((~mapped).sum())}")
        lines.append("  bead  name   type  atoms  align  centre")
        for b in mm.beads:
            own = np.array_equal(np.sort(b.centre_atoms), np.asarray(b.atoms))
            centre = "own atoms, by mass" if own and _is_mass_weighted(mt, b) else f"{len(b.centre_atoms)} atoms, weighted"
            align = "-" if b.align is None else str(b.align + 1)
            lines.append(f"  {b.index + 1:4d}  {b.name:5s}  {b.type:4s}  {len(b.atoms):5d}  {align:>5s}  {centre}")
    return "\n".join(lines) + "\n"


def _is_mass_weighted(mt, bead) -> bool:
    m = np.array([float(mt.graph.nodes[int(a)]["mass"]) for a in bead.centre_atoms])
    return bool(np.allclose(bead.centre_weights, m / m.sum()))


def molecule_mapping_text(mm, mt, header: str = "") -> str:
    """The per-molecule file (``[ molecule ]``, ``[ map ]``, ``[ align ]``, ``[ mult ]``, ``[ centre ]``,
    ``[ names ]``) of one moleculetype's mapping."""
    g = mt.graph
    masses = np.array([float(g.nodes[i]["mass"]) for i in range(mt.n_atoms)])
    out = [f"; {line}" for line in header.splitlines()] + ["", "[ molecule ]", mt.name, "", "[ map ]",
                                                          "; atom  type   bead  bead-type   (atom name)"]
    bead_of = mm.atom_bead()
    for i in range(mt.n_atoms):
        b = mm.beads[bead_of[i]]
        out.append(f"{i + 1:6d}  {g.nodes[i]['type']:6s} {b.index + 1:5d}  {b.type:6s} ; {g.nodes[i]['name']}")
    out += ["", "[ align ]", "; bead  fixpoint"]
    out += [f"{b.index + 1:6d} {b.align + 1:5d}" for b in mm.beads if b.align is not None]
    out += ["", "[ mult ]", "; bead  multiples"] + [f"{b.index + 1:6d} {b.mult:5d}" for b in mm.beads]
    out += ["", "[ centre ]", "; bead  atom  mass-factor   (beads not listed: centre of mass of their own atoms)"]
    for b in mm.beads:
        if np.array_equal(np.sort(b.centre_atoms), np.asarray(b.atoms)) and _is_mass_weighted(mt, b):
            continue
        # weights as mass factors, scaled so that the largest is 1
        factors = b.centre_weights / masses[b.centre_atoms]
        factors = factors / factors.max()
        out += [f"{b.index + 1:6d} {int(a) + 1:5d}  {f:.10g}   ; {g.nodes[int(a)]['name']}"
                for a, f in zip(b.centre_atoms, factors)]
    out += ["", "[ names ]", "; bead  name"] + [f"{b.index + 1:6d}  {b.name}" for b in mm.beads]
    return "\n".join(out) + "\n"


def expanded_paths(smap: SystemMapping, output) -> dict:
    """{moleculetype: path}: ``output`` itself for one moleculetype, ``<stem>_<name><suffix>`` for several."""
    from pathlib import Path
    output = Path(output)
    names = list(smap.molecules)
    if len(names) == 1:
        return {names[0]: output}
    return {n: output.with_name(f"{output.stem}_{n}{output.suffix or '.map'}") for n in names}


def write_expanded(smap: SystemMapping, output, sources=()) -> dict:
    """Write each moleculetype's per-molecule mapping (atomically; existing files backed up as #name.N#).
    Returns {moleculetype: path}."""
    import logging
    from pathlib import Path

    from ..io.safe import atomic_output, check_writable
    paths = expanded_paths(smap, output)
    for p in paths.values():
        check_writable(p)
    header = ("gmx_dbm expanded per-molecule mapping of moleculetype {name}, written by `gmx_dbm mapping` from "
              + ", ".join(Path(s).name for s in sources))
    for name, p in paths.items():
        text = molecule_mapping_text(smap.molecules[name], smap.system.moleculetypes[name], header.format(name=name))
        with atomic_output(p) as tmp:
            Path(tmp).write_text(text)
        logging.getLogger(__name__).info("wrote %s (moleculetype %s)", p, name)
    return paths
