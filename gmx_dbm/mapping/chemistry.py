"""Bead chemistry: what a chemically specific model must have seen to generate a bead.

A bead's signature is its type, the atom types (with counts) and bond graph of its atoms (atom types as labels), and the
types of the beads it is bonded to. A model trained on sPS 10-mers has seen the chain-start, inner and
chain-end backbone beads and the ring bead, so it serves sPS chains of any length: their beads are the
same four. Signatures are text, ``TYPE|FORMULA|GRAPH|BONDED`` (GRAPH a short hash), stored in the model card.
"""
from __future__ import annotations

from collections import Counter

import networkx as nx


def _formula(mt, atoms) -> str:
    """Atom types with counts, 'C:2 H:3' (types, not elements: they are the model's channels)."""
    counts = Counter(str(mt.graph.nodes[a]["type"]) for a in atoms)
    return " ".join(f"{t}:{counts[t]}" for t in sorted(counts))


def _graph_hash(mt, atoms) -> str:
    sub = mt.graph.subgraph(atoms).copy()
    nx.set_node_attributes(sub, {a: str(mt.graph.nodes[a]["type"]) for a in sub}, "label")
    return nx.weisfeiler_lehman_graph_hash(sub, node_attr="label", iterations=3, digest_size=6)


def molecule_bead_signatures(mt, mm) -> list:
    """The signature of every bead of one moleculetype's mapping, in bead order."""
    cg = mm.cg_graph()
    out = []
    for b in mm.beads:
        bonded = ",".join(sorted(mm.beads[j].type for j in cg.neighbors(b.index)))
        out.append(f"{b.type}|{_formula(mt, b.atoms)}|{_graph_hash(mt, b.atoms)}|{bonded}")
    return out


def bead_signatures(smap) -> dict:
    """{signature: [(moleculetype, bead index, bead name), ...]} over the moleculetypes in use."""
    out: dict = {}
    system = smap.system
    for name, count in system.molecules:
        if not count or name not in smap.molecules:
            continue
        mm = smap.molecules[name]
        for b, sig in zip(mm.beads, molecule_bead_signatures(system.moleculetypes[name], mm)):
            where = (name, b.index, b.name)
            if where not in out.setdefault(sig, []):
                out[sig].append(where)
    return out


def describe_signature(sig: str) -> str:
    """'bead type BB, atoms C:2 H:4 (graph 1a2b...), bonded to BB, SC' for messages."""
    parts = sig.split("|")
    if len(parts) != 4:
        return sig
    btype, formula, graph, bonded = parts
    return (f"bead type {btype}, atoms {formula} (graph {graph}), bonded to "
            f"{bonded.replace(',', ', ') if bonded else 'no other bead'}")
