#!/usr/bin/env python3
"""Make sPS reference frames with shorter chains by cutting the 10-mers of an all-atom sPS melt.

From each chain listed in ``--cut`` one monomer (``--delete-monomer``, default 4) is deleted with all its
atoms, which leaves two chains (with the default: monomers 1-3, a 3-mer, and monomers 5-10, a 6-mer).
Each broken backbone bond is capped with a hydrogen on the old bond's direction at 0.110 nm (the C-H b0
of the force field): the CH before the gap becomes a CH2 chain end, the CH2 after it a CH3 chain start.
The other chains of ``--chains`` stay 10-mers. Atoms of every new chain are reordered and renamed to the
order of ``sps(n)`` in topologies/make_topologies.py (the extra start and end hydrogens last); the
assignment is derived from the bond graph and checked against ``sps(n)``'s bonds and atom types.

Writes into ``--out``: topol.top (includes the project's force field by a relative path, and the
moleculetype files next to it, PS10.itp, PS3.itp, PS6.itp; ``[ molecules ]`` grouped by type: 10-mers,
then the first and then the second pieces), aa.xtc (all frames written) and aa.gro (the first frame).
Positions are written whole: each input chain is made whole along its bonds from its first atom (chains
are longer than half the box, so per-atom minimum images would break them); the pieces keep those
positions. Afterwards every written frame is read back and checked: every bond 0.10-0.16 nm, caps within
0.02 nm of b0, every aliphatic carbon with 4 bonds and every aromatic one with 3.

Chains are numbered from 0 in the input's order. Run from the repository root, e.g.

    .venv/bin/python scripts/make_chain_mixture.py --frames FRAMES.xtc --out DIR [--n-frames N]
        [--chains 0-35] [--cut 12-35] [--delete-monomer 4]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import networkx as nx
import numpy as np

from gmx_dbm.geometry import WholePlan
from gmx_dbm.io import AtomInfo, Frame, open_writer, read_frames
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
FORCEFIELD = ROOT / "topologies" / "mp_ps.ff" / "forcefield.itp"
INPUT_TOP = ROOT / "topologies" / "sps.top"
CAP_LENGTH = 0.110      # nm, C-H b0 of the force field
ATOMS_PER_MONOMER = 16
BOND_RANGE = (0.10, 0.16)
CAP_TOLERANCE = 0.02
VALENCE = {"C": 4, "C_AR": 3}


def _load_generator():
    """topologies/make_topologies.py (not a package): its ``sps(n, name)`` is the one definition of the
    chain's atom order."""
    spec = importlib.util.spec_from_file_location("make_topologies", ROOT / "topologies" / "make_topologies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOPOLOGIES = _load_generator()


def parse_chains(spec: str) -> list:
    """'0-11,14' -> [0, ..., 11, 14] (sorted, unique)."""
    out = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


@dataclass
class Piece:
    """A chain made from part of an input chain. ``source[k]``: input-local index of new atom k, or -1
    for a cap; ``caps``: {new index of a cap: (input-local capped carbon, input-local deleted neighbour)}."""
    name: str
    n_mon: int
    source: np.ndarray
    caps: dict
    itp: str
    cap_bonds: list       # (new carbon, new cap) of each cap bond


def backbone_order(g: nx.Graph) -> list:
    """Aliphatic carbons along the chain, starting at the CH3 end (3 hydrogens)."""
    carbons = [i for i in g if g.nodes[i]["type"] == "C"]
    bb = g.subgraph(carbons)
    ends = [i for i in carbons if bb.degree(i) == 1]
    n_h = {i: sum(g.nodes[j]["type"] == "H" for j in g[i]) for i in ends}
    starts = [i for i in ends if n_h[i] == 3]
    if len(ends) != 2 or len(starts) != 1 or not nx.is_connected(bb):
        raise ValueError("input moleculetype is not a linear sPS chain with one CH3 end")
    path = nx.shortest_path(bb, starts[0], next(i for i in ends if i != starts[0]))
    if len(path) != len(carbons):
        raise ValueError("aliphatic carbons of the input chain do not form one path")
    return path


def cut_chain(g: nx.Graph, n_mon: int, delete: int) -> list:
    """Pieces left when monomer ``delete`` (1-based) is removed from the chain of graph ``g``."""
    if g.number_of_nodes() != ATOMS_PER_MONOMER * n_mon + 2:
        raise ValueError(f"input chain has {g.number_of_nodes()} atoms, expected {ATOMS_PER_MONOMER * n_mon + 2}")
    bb = backbone_order(g)
    if len(bb) != 2 * n_mon:
        raise ValueError(f"input chain has {len(bb)} aliphatic carbons, expected {2 * n_mon}")
    # monomers = what stays connected when the CH(u)-CH2(u+1) backbone bonds are removed
    split = g.copy()
    split.remove_edges_from((bb[2 * u + 1], bb[2 * u + 2]) for u in range(n_mon - 1))
    monomer = {}
    for u in range(n_mon):
        for i in nx.node_connected_component(split, bb[2 * u]):
            monomer[i] = u
    if len(monomer) != g.number_of_nodes():
        raise ValueError("input chain has atoms outside its monomers")
    m = delete - 1
    gone = {i for i, u in monomer.items() if u == m}
    rest = g.subgraph(set(g) - gone)
    pieces = []
    for atoms in sorted(nx.connected_components(rest), key=min):
        mons = sorted({monomer[i] for i in atoms})
        n = len(mons)
        if n < 2:
            raise ValueError(f"deleting monomer {delete} leaves a {n}-mer; pieces need at least 2 monomers")
        first_c, last_c = bb[2 * mons[0]], bb[2 * mons[-1] + 1]
        caps = [(c, d) for c in atoms for d in g[c] if d in gone]
        # the new chain's two extra hydrogens: one on its first CH2, one on its last CH (old ones or caps)
        extra = {}
        for i in atoms:
            if g.nodes[i]["type"] == "H" and i >= ATOMS_PER_MONOMER * n_mon:
                extra[next(iter(g[i]))] = i
        for c, d in caps:
            if c in extra:
                raise ValueError(f"carbon {c + 1} would get two chain-end hydrogens")
            extra[c] = ("cap", c, d)
        if set(extra) != {first_c, last_c}:
            raise ValueError("chain-end hydrogens of a piece are not on its first CH2 and last CH")
        body = sorted(i for i in atoms if i < ATOMS_PER_MONOMER * n_mon)
        order = body + [extra[first_c], extra[last_c]]
        pieces.append(_piece(g, n, order))
    return pieces


def _piece(g: nx.Graph, n: int, order: list) -> Piece:
    """Check ``order`` against sps(n): same atom types, and the bonds map one to one onto sps(n)'s."""
    name = f"PS{n}"
    target = TOPOLOGIES.sps(n, name)
    source = np.array([-1 if isinstance(o, tuple) else o for o in order], dtype=np.int64)
    caps = {k: (o[1], o[2]) for k, o in enumerate(order) if isinstance(o, tuple)}
    new = {o: k for k, o in enumerate(order) if not isinstance(o, tuple)}
    bonds = {tuple(sorted((new[a], new[b]))) for a, b in g.edges if a in new and b in new}
    cap_bonds = [(new[c], k) for k, (c, _) in caps.items()]
    bonds |= {tuple(sorted(b)) for b in cap_bonds}
    want = {tuple(sorted((a - 1, b - 1))) for a, b in target.g.edges}
    if len(order) != len(target.atoms) or bonds != want:
        raise ValueError(f"piece does not match sps({n}): {len(order)} vs {len(target.atoms)} atoms, "
                         f"{len(bonds ^ want)} bonds differ")
    types = ["H" if k in caps else g.nodes[o]["type"] for k, o in enumerate(source)]
    if types != [a[1] for a in target.atoms]:
        raise ValueError(f"piece atom types differ from sps({n})")
    itp = target.itp(f"; syndiotactic polystyrene {n}-mer ({len(target.atoms)} atoms), "
                     "made by scripts/make_chain_mixture.py")
    return Piece(name, n, source, caps, itp, cap_bonds)


@dataclass
class Mixture:
    """Output molecules in order: (piece, input chain index)."""
    molecules: list
    input_n_atoms: int
    input_chain_atoms: int

    def counts(self) -> list:
        out = []
        for piece, _ in self.molecules:
            if out and out[-1][0] == piece.name:
                out[-1][1] += 1
            else:
                out.append([piece.name, 1])
        return [tuple(c) for c in out]

    def positions(self, whole: np.ndarray) -> np.ndarray:
        """Output positions from the input positions ``whole`` (molecules already whole)."""
        out = []
        for piece, chain in self.molecules:
            base = whole[chain * self.input_chain_atoms:(chain + 1) * self.input_chain_atoms]
            pos = base[np.maximum(piece.source, 0)].copy()
            for k, (c, d) in piece.caps.items():
                v = base[d] - base[c]
                pos[k] = base[c] + CAP_LENGTH * v / np.linalg.norm(v)
            out.append(pos)
        return np.concatenate(out)


def plan_mixture(system, chains: list, cut: list, delete: int) -> Mixture:
    if len(system.molecules) != 1:
        raise ValueError("the input topology must hold one moleculetype (the sPS chains)")
    name, count = system.molecules[0]
    mt = system.moleculetypes[name]
    n_mon = (mt.n_atoms - 2) // ATOMS_PER_MONOMER
    bad = [c for c in chains if not 0 <= c < count]
    if bad:
        raise ValueError(f"chains {bad} not in the input (chains 0-{count - 1})")
    if set(cut) - set(chains):
        raise ValueError(f"chains to cut {sorted(set(cut) - set(chains))} are not among --chains")
    whole_piece = _piece(mt.graph, n_mon, list(range(mt.n_atoms)))   # also checks the input is sps(n)
    pieces = cut_chain(mt.graph, n_mon, delete)
    groups = [[(whole_piece, c) for c in chains if c not in cut]]
    groups += [[(p, c) for c in cut] for p in pieces]
    return Mixture([m for grp in groups for m in grp], system.n_atoms, mt.n_atoms)


def write_topology(out: Path, mixture: Mixture, title: str) -> Path:
    pieces = {p.name: p for p, _ in mixture.molecules}
    for name, piece in pieces.items():
        (out / f"{name}.itp").write_text(piece.itp)
    ff = Path(os.path.relpath(FORCEFIELD, out)).as_posix()
    lines = ["; sPS chains cut from 10-mers, made by scripts/make_chain_mixture.py",
             f'#include "{ff}"'] + [f'#include "{name}.itp"' for name in pieces]
    lines += ["", "[ system ]", title, "", "[ molecules ]", "; name  count"]
    lines += [f"{name}  {n}" for name, n in mixture.counts()]
    top = out / "topol.top"
    top.write_text("\n".join(lines) + "\n")
    return top


def check_output(top: Path, frames_path: Path, mixture: Mixture) -> dict:
    """Bond lengths and valences of the written frames; raises ValueError when one is off."""
    system = read_topology(top)
    flat = system.flat()
    idx, b0 = flat.bond_list()
    n_bonds = np.bincount(idx.ravel(), minlength=flat.n_atoms)
    for t, v in VALENCE.items():
        wrong = np.flatnonzero((flat.types == t) & (n_bonds != v))
        if len(wrong):
            raise ValueError(f"{len(wrong)} {t} atoms do not have {v} bonds (first: atom {wrong[0] + 1})")
    offsets = np.cumsum([0] + [len(p.source) for p, _ in mixture.molecules])
    cap_rows = set()
    for (piece, _), off in zip(mixture.molecules, offsets):
        cap_rows |= {tuple(sorted((off + c, off + k))) for c, k in piece.cap_bonds}
    is_cap = np.array([tuple(sorted(b)) in cap_rows for b in idx.tolist()])
    plan = WholePlan(flat.n_atoms, idx)
    lengths, n = [], 0
    for frame in read_frames(frames_path, n_atoms=flat.n_atoms):
        pos = plan.apply(frame.positions, frame.box)
        d = np.linalg.norm(pos[idx[:, 0]] - pos[idx[:, 1]], axis=1)
        out = np.flatnonzero((d < BOND_RANGE[0]) | (d > BOND_RANGE[1]))
        if len(out):
            i, j = idx[out[0]]
            raise ValueError(f"frame {n}: {len(out)} bonds outside {BOND_RANGE} nm "
                             f"(first: {i + 1}-{j + 1}, {d[out[0]]:.3f} nm)")
        cap_dev = np.abs(d[is_cap] - b0[is_cap])
        if cap_dev.size and cap_dev.max() > CAP_TOLERANCE:
            raise ValueError(f"frame {n}: a cap bond is {cap_dev.max():.3f} nm off b0")
        lengths.append(d)
        n += 1
    d = np.concatenate(lengths)
    caps = np.concatenate([x[is_cap] for x in lengths])
    return {"frames": n, "bonds": len(idx), "caps": int(is_cap.sum()), "min": float(d.min()),
            "max": float(d.max()), "cap_min": float(caps.min()) if caps.size else float("nan"),
            "cap_max": float(caps.max()) if caps.size else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", required=True, type=Path, help="all-atom frames of the input melt (.xtc, .gro)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--topology", type=Path, default=INPUT_TOP, help="topology of the input (default: %(default)s)")
    ap.add_argument("--n-frames", type=int, default=None, help="first N frames only (default: all)")
    ap.add_argument("--chains", default=None, help="input chains to keep, from 0, e.g. 0-11,20 (default: all)")
    ap.add_argument("--cut", default="12-35", help="chains (among --chains) to cut (default: %(default)s)")
    ap.add_argument("--delete-monomer", type=int, default=4, help="monomer deleted from cut chains, from 1 "
                    "(default: %(default)s)")
    args = ap.parse_args(argv)

    system = read_topology(args.topology)
    n_chains = system.molecules[0][1] if system.molecules else 0
    chains = parse_chains(args.chains) if args.chains else list(range(n_chains))
    cut = parse_chains(args.cut)
    mixture = plan_mixture(system, chains, cut, args.delete_monomer)
    counts = mixture.counts()
    title = "sPS: " + ", ".join(f"{name} x{n}" for name, n in counts) + " (10-mers cut)"

    args.out.mkdir(parents=True, exist_ok=True)
    top = write_topology(args.out, mixture, title)
    atoms = AtomInfo.from_topology(read_topology(top).flat())
    plan = WholePlan(system.n_atoms, system.flat().bond_list()[0])
    frames = read_frames(args.frames, n_atoms=system.n_atoms)
    with open_writer(args.out / "aa.xtc", atoms) as xtc:
        for k, frame in enumerate(islice(frames, args.n_frames)):
            pos = mixture.positions(plan.apply(frame.positions, frame.box))
            new = Frame(positions=pos, box=frame.box, time=frame.time, step=frame.step)
            xtc.write(new)
            if k == 0:
                with open_writer(args.out / "aa.gro", atoms, title=title) as gro:
                    gro.write(new)
    for p in args.out.glob("#aa.*#"):   # backups of earlier runs' frames
        p.unlink()

    stats = check_output(top, args.out / "aa.xtc", mixture)
    print(f"wrote {args.out}: {len(atoms)} atoms, " + ", ".join(f"{name} x{n}" for name, n in counts)
          + f", {stats['frames']} frame(s), positions whole")
    print(f"{'check':<28s}{'value':>12s}")
    print(f"{'bonds per frame':<28s}{stats['bonds']:>12d}")
    print(f"{'shortest bond (nm)':<28s}{stats['min']:>12.4f}")
    print(f"{'longest bond (nm)':<28s}{stats['max']:>12.4f}")
    print(f"{'cap bonds per frame':<28s}{stats['caps']:>12d}")
    print(f"{'cap bond min/max (nm)':<28s}{stats['cap_min']:>6.4f}/{stats['cap_max']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
