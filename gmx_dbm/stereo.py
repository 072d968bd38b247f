"""Stereochemistry of tetrahedral centres: find them, read their handedness, learn it from all-atom
frames, and repair generated structures whose centres came out inverted (numpy only).

A centre is an atom with four bonded neighbours, three of them heavy and one a hydrogen (a CH with three
different-looking heavy substituents, as every backbone CH of polystyrene). Its handedness is the sign of
the volume (n1 - c) . ((n2 - c) x (n3 - c)) of its heavy neighbours taken in topology order. Equilibrium
MD never changes it; a generator that places atoms one bead at a time can, directly or by leaving the
hydrogen on its heavy neighbours' side, which short MD then resolves by pushing the carbon through
(measured on sPS with the shipped model: 11.6% of the backbone CH centres inverted without a repair, the
reference 0%; nearly all of the proper-dihedral error). ``place_hydrogens`` puts such hydrogens back;
``repair`` inverts a centre back by moving the centre atom and its hydrogen to their mirror images
through the plane of the three heavy neighbours (bonds kept); backmap first redraws the beads of
inverted centres with the generator and mirrors only what is left.

Which handedness is right is a property of the molecule, not of the CG frame: it comes from the model
card (learnt from the training data; only centres with one handedness in every molecule and frame) or
from an all-atom template of the user's system.
"""
from __future__ import annotations

import numpy as np

from .geometry import minimum_image


def find_centres(flat) -> np.ndarray:
    """(m, 5) int: centre, its three heavy neighbours (ascending), its hydrogen; global atom indices."""
    n = flat.n_atoms
    neigh = [[] for _ in range(n)]
    for idx, _ in flat.bonded["bonds"].values():
        for i, j in np.asarray(idx).tolist():
            neigh[i].append(j)
            neigh[j].append(i)
    heavy = flat.is_heavy
    out = []
    for c in range(n):
        nb = neigh[c]
        if len(nb) != 4 or not heavy[c]:
            continue
        hv = sorted(a for a in nb if heavy[a])
        hs = [a for a in nb if not heavy[a]]
        if len(hv) == 3 and len(hs) == 1:
            out.append((c, *hv, hs[0]))
    return np.asarray(out, dtype=np.int64).reshape(-1, 5)


def signed_volumes(positions, box, centres: np.ndarray) -> np.ndarray:
    """(m,) triple product of the unit vectors from each centre to its first three neighbours: the sign is
    the handedness, the size how clearly tetrahedral the centre is (0.770 ideal, 0 flat)."""
    x = np.asarray(positions, dtype=np.float64)
    c = x[centres[:, 0]]
    v = [minimum_image(x[centres[:, k]] - c, box) for k in (1, 2, 3)]
    v = [a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12) for a in v]
    return np.einsum("ij,ij->i", v[0], np.cross(v[1], v[2]))


def handedness(positions, box, centres: np.ndarray) -> np.ndarray:
    """(m,) +1 / -1 per centre (0 for a flat one)."""
    return np.sign(signed_volumes(positions, box, centres)).astype(np.int64)


def learn(flat, frames, centres: np.ndarray | None = None) -> dict:
    """{moleculetype: {local centre atom index: sign}} from all-atom frames (iterable of (positions, box)):
    the centres whose handedness is the same in every molecule of that type and every frame."""
    centres = find_centres(flat) if centres is None else centres
    if len(centres) == 0:
        return {}
    mol_type = np.asarray(flat.mol_type)[np.asarray(flat.mol_index)[centres[:, 0]]]
    first = _first_atom_of_molecule(flat)
    local = centres[:, 0] - first[np.asarray(flat.mol_index)[centres[:, 0]]]
    seen: dict = {}
    for positions, box in frames:
        s = handedness(positions, box, centres)
        for t, a, v in zip(mol_type.tolist(), local.tolist(), s.tolist()):
            seen.setdefault(str(t), {}).setdefault(int(a), set()).add(int(v))
    return {t: {a: next(iter(v)) for a, v in sorted(d.items()) if len(v) == 1 and 0 not in v}
            for t, d in seen.items() if any(len(v) == 1 and 0 not in v for v in d.values())}


def _first_atom_of_molecule(flat) -> np.ndarray:
    mol = np.asarray(flat.mol_index)
    first = np.zeros(mol.max() + 1 if len(mol) else 0, dtype=np.int64)
    # atoms are in molecule order: the first index of each molecule
    change = np.r_[True, mol[1:] != mol[:-1]]
    first[mol[change]] = np.nonzero(change)[0]
    return first


def targets(flat, table: dict, centres: np.ndarray | None = None) -> tuple:
    """Global (centres (k, 5), signs (k,)) of the centres ``table`` (from ``learn``) fixes in this system."""
    centres = find_centres(flat) if centres is None else centres
    if len(centres) == 0 or not table:
        return centres[:0], np.zeros(0, dtype=np.int64)
    mol_type = np.asarray(flat.mol_type)[np.asarray(flat.mol_index)[centres[:, 0]]]
    local = centres[:, 0] - _first_atom_of_molecule(flat)[np.asarray(flat.mol_index)[centres[:, 0]]]
    keep, signs = [], []
    for k, (t, a) in enumerate(zip(mol_type.tolist(), local.tolist())):
        sign = table.get(str(t), {}).get(int(a), table.get(str(t), {}).get(str(a)))
        if sign is not None:
            keep.append(k)
            signs.append(int(sign))
    return centres[keep], np.asarray(signs, dtype=np.int64)


def repair(positions, box, centres: np.ndarray, signs: np.ndarray) -> tuple:
    """Invert the centres whose handedness differs from ``signs``: centre atom and hydrogen mirrored
    through the plane of the heavy neighbours. Returns (new positions, number inverted)."""
    x = np.array(positions, dtype=np.float64, copy=True)
    if len(centres) == 0:
        return x, 0
    wrong = handedness(x, box, centres) != signs
    cw = centres[wrong]
    if len(cw) == 0:
        return x, 0
    c = x[cw[:, 0]]
    p1 = c + minimum_image(x[cw[:, 1]] - c, box)
    p2 = c + minimum_image(x[cw[:, 2]] - c, box)
    p3 = c + minimum_image(x[cw[:, 3]] - c, box)
    normal = np.cross(p2 - p1, p3 - p1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-12)
    for col in (0, 4):
        a = c + minimum_image(x[cw[:, col]] - c, box)
        dist = np.einsum("ij,ij->i", a - p1, normal)
        x[cw[:, col]] = a - 2.0 * dist[:, None] * normal
    return x, int(wrong.sum())


def hydrogens_inside(positions, box, centres: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """(m,) bool: the centre's hydrogen points towards its heavy neighbours (the sum of the unit vectors
    to them) instead of away from them: no tetrahedral centre has that. ``tol``: the dot product of the
    hydrogen's unit vector with that sum must exceed it (rounded coordinates of a nearly flat centre)."""
    x = np.asarray(positions, dtype=np.float64)
    c = x[centres[:, 0]]
    units = [_unit(minimum_image(x[centres[:, k]] - c, box)) for k in (1, 2, 3, 4)]
    return np.einsum("ij,ij->i", units[0] + units[1] + units[2], units[3]) > tol


def place_hydrogens(positions, box, centres: np.ndarray) -> tuple:
    """Put the hydrogen of each centre that ``hydrogens_inside`` finds opposite its heavy neighbours (along -(u1 + u2 + u3), at its current bond length): measured on sPS, the shipped
    generator left ~5% of the backbone CH hydrogens on the heavy atoms' side; MD then pushes the carbon
    through the plane of its neighbours (an inverted centre) rather than the hydrogen back.
    Returns (new positions, number moved)."""
    x = np.array(positions, dtype=np.float64, copy=True)
    if len(centres) == 0:
        return x, 0
    which = hydrogens_inside(x, box, centres)
    cw = centres[which]
    if len(cw) == 0:
        return x, 0
    c = x[cw[:, 0]]
    heavy = sum(_unit(minimum_image(x[cw[:, k]] - c, box)) for k in (1, 2, 3))
    h = minimum_image(x[cw[:, 4]] - c, box)
    x[cw[:, 4]] = c - _unit(heavy) * np.linalg.norm(h, axis=1, keepdims=True)
    return x, int(which.sum())


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-12)


def merge(tables) -> dict:
    """One table from several (several data sets): a centre whose handedness disagrees is dropped."""
    out: dict = {}
    dropped: dict = {}
    for table in tables:
        for t, d in table.items():
            for a, v in d.items():
                a = int(a)
                if a in dropped.get(t, ()):
                    continue
                prev = out.setdefault(t, {}).get(a)
                if prev is not None and prev != v:
                    del out[t][a]
                    dropped.setdefault(t, set()).add(a)
                else:
                    out[t][a] = int(v)
    return {t: d for t, d in out.items() if d}


# ------------------------------------------------------------------------------------------- tacticity
# Tacticity as a pattern: the relative handedness of consecutive centres along a chain, keyed by the
# chemistry of the two centres, so that it applies to chains of any length. Handedness here is oriented
# along the chain: sign((prev - c) . ((side - c) x (next - c))), where prev / next are the heavy
# neighbours towards the previous / next centre (topology order) and side is the third; at a chain end,
# the remaining neighbour whose branch is like the side groups of the inner centres is the side (a phenyl
# ring), the other takes the missing backbone role, so that ends follow the inner centres' convention.
KIND_RADIUS = 2        # bonds around a centre that define its kind (2: a chain's second centre is inner)
BRANCH_RADIUS = 3      # bonds of a side branch compared between centres
PAIR_REACH = 4         # consecutive centres are at most this many bonds apart, with no centre between
PATTERN_AGREEMENT = 0.98   # a pair kind with a less uniform relation in the training data is atactic


def _graph_of(flat):
    import networkx as nx
    g = nx.Graph()
    g.add_nodes_from(range(flat.n_atoms))
    for idx, _ in flat.bonded["bonds"].values():
        g.add_edges_from(map(tuple, np.asarray(idx).tolist()))
    return g


def _label(g, types, nodes, root):
    import networkx as nx
    sub = g.subgraph(nodes).copy()
    nx.set_node_attributes(sub, {n: ("*" if n == root else "") + str(types[n]) for n in sub}, "label")
    return nx.weisfeiler_lehman_graph_hash(sub, node_attr="label", iterations=KIND_RADIUS, digest_size=6)


class ChainCentres:
    """The tetrahedral centres of a system ordered for tacticity: ``centres`` (m, 5) as ``find_centres``
    but with the heavy neighbours in the oriented order (prev, side, next); ``kinds`` (m,) chemistry of
    each centre (a hash of its surroundings within KIND_RADIUS bonds); ``pairs`` (p, 2) consecutive
    centres (rows of ``centres``, lower atom index first). Computed once per moleculetype."""

    def __init__(self, flat):
        base = find_centres(flat)
        mol = np.asarray(flat.mol_index)
        first = _first_atom_of_molecule(flat)
        g = _graph_of(flat)
        heavy = np.asarray(flat.is_heavy)
        types = list(flat.types)
        by_type: dict = {}      # moleculetype -> (local oriented rows, kinds, local pairs) of its first instance
        rows, kinds, pairs = [], [], []
        order = np.argsort(base[:, 0], kind="stable")
        base = base[order]
        centre_mol = mol[base[:, 0]] if len(base) else np.zeros(0, dtype=np.int64)
        for m in np.unique(centre_mol):
            sel = base[centre_mol == m]
            t = flat.mol_type[m]
            off = int(first[m])
            if t not in by_type:
                by_type[t] = self._one_molecule(g, heavy, types, sel)
                by_type[t] = (by_type[t][0] - off, by_type[t][1], by_type[t][2])
            local, k, p = by_type[t]
            start = len(rows)
            rows.extend((local + off).tolist())
            kinds.extend(k)
            pairs.extend((np.asarray(p, dtype=np.int64).reshape(-1, 2) + start).tolist())
        self.centres = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
        self.kinds = np.asarray(kinds, dtype=str)
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    @staticmethod
    def _one_molecule(g, heavy, types, sel):
        import networkx as nx
        index = {int(c): k for k, c in enumerate(sel[:, 0])}
        # consecutive centres: reachable along heavy atoms within PAIR_REACH bonds, no centre in between
        towards = {}            # (centre k, partner k2) -> the neighbour of k on the path
        pairs = set()
        for k, c in enumerate(sel[:, 0].tolist()):
            seen = {c: None}
            frontier = [(c, None)]
            for _ in range(PAIR_REACH):
                nxt = []
                for a, via in frontier:
                    for b in g[a]:
                        if b in seen or not heavy[b]:
                            continue
                        seen[b] = via if via is not None else b
                        if b in index:
                            k2 = index[b]
                            towards[(k, k2)] = seen[b]
                            pairs.add((min(k, k2), max(k, k2)))
                            continue
                        nxt.append((b, seen[b]))
                frontier = nxt
        def branch(a, c):
            """Label of the branch at ``a`` seen from centre ``c``: what lies within BRANCH_RADIUS bonds of
            ``a`` without passing through ``c`` (a walk over the branch only, not the whole system)."""
            near, frontier = {a: 0}, [a]
            for d in range(1, BRANCH_RADIUS + 1):
                nxt = []
                for x in frontier:
                    for y in g[x]:
                        if y != c and y not in near:
                            near[y] = d
                            nxt.append(y)
                frontier = nxt
            return _label(g, types, near, a)

        partners: dict = {}     # centre k -> the centres it is consecutive with
        for (a, k2) in towards:
            partners.setdefault(a, []).append(k2)
        roles = []
        for k, row in enumerate(sel):
            c, hv = int(row[0]), [int(x) for x in row[1:4]]
            prev_k = [k2 for k2 in partners.get(k, ()) if sel[k2, 0] < c]
            next_k = [k2 for k2 in partners.get(k, ()) if sel[k2, 0] > c]
            prev = towards[(k, max(prev_k, key=lambda j: sel[j, 0]))] if prev_k else None
            nxt_ = towards[(k, min(next_k, key=lambda j: sel[j, 0]))] if next_k else None
            roles.append((prev, nxt_, [a for a in hv if a not in (prev, nxt_)]))
        side_labels = {branch(rest[0], int(sel[k, 0])) for k, (p_, n_, rest) in enumerate(roles)
                       if p_ is not None and n_ is not None and len(rest) == 1}
        rows, kinds = [], []
        for k, (prev, nxt_, rest) in enumerate(roles):
            c, h = int(sel[k, 0]), int(sel[k, 4])
            labels = {a: branch(a, c) for a in rest}
            rest.sort(key=lambda a: (labels[a] not in side_labels, labels[a], a) if (prev is None) != (nxt_ is None)
                      else (labels[a], a))
            slots = [prev, None, nxt_]
            if slots[0] is None and slots[2] is not None:
                slots[1], slots[0] = rest[0], rest[1]          # side first, the other is the chain start
            elif slots[2] is None and slots[0] is not None:
                slots[1], slots[2] = rest[0], rest[1]
            else:
                for s_ in (0, 1, 2):
                    if slots[s_] is None:
                        slots[s_] = rest.pop(0)
            rows.append((c, *slots, h))
            near = nx.single_source_shortest_path_length(g, c, cutoff=KIND_RADIUS)
            kinds.append(_label(g, types, near, c))
        return np.asarray(rows, dtype=np.int64).reshape(-1, 5), kinds, sorted(pairs)

    def pair_keys(self) -> list:
        return [f"{self.kinds[a]}>{self.kinds[b]}" for a, b in self.pairs.tolist()]


def cg_triples(centres: np.ndarray, atom_bead, bead_types, cg_bonds) -> np.ndarray:
    """(m, 4) beads (B, B_prev, B_next, S) per centre: B holds the centre atom, B_prev / B_next are its
    CG-bonded beads of B's own type (lower / higher index: the backbone), S the one of another type (the
    side group); a row of -1 where the centre's bead is not bonded that way (chain ends, one-bead
    monomers)."""
    atom_bead = np.asarray(atom_bead)
    types = np.asarray(bead_types)
    nb = [[] for _ in range(len(types))]
    for i, j in np.asarray(cg_bonds).reshape(-1, 2).tolist():
        nb[i].append(j)
        nb[j].append(i)
    out = np.full((len(centres), 4), -1, dtype=np.int64)
    for k, c in enumerate(np.asarray(centres)[:, 0].tolist()):
        b = int(atom_bead[c])
        same = sorted(x for x in nb[b] if types[x] == types[b])
        other = [x for x in nb[b] if types[x] != types[b]]
        if len(same) == 2 and len(other) == 1:
            out[k] = (b, same[0], same[1], other[0])
    return out


def cg_handedness(triples: np.ndarray, beads, box) -> np.ndarray:
    """(m,) sign((B_prev - B) x (B_next - B) . (S - B)) of the CG beads, 0 where ``triples`` has none."""
    out = np.zeros(len(triples), dtype=np.int64)
    ok = triples[:, 0] >= 0
    if not ok.any():
        return out
    t = triples[ok]
    x = np.asarray(beads, dtype=np.float64)
    v = [minimum_image(x[t[:, k]] - x[t[:, 0]], box) for k in (1, 2, 3)]
    out[ok] = np.sign(np.einsum("ij,ij->i", np.cross(v[0], v[1]), v[2])).astype(np.int64)
    return out


def learn_tacticity(flat, frames, chain: ChainCentres | None = None, triples: np.ndarray | None = None) -> dict:
    """Counts of equal and opposite oriented handedness of consecutive centres per pair kind in all-atom
    frames (iterable of (positions, box), or (positions, box, CG beads) with ``triples`` from
    ``cg_triples``): {'counts': {pair kind: [equal, opposite]}, 'cg': [agree, disagree]}, 'cg' counting
    how often the CG beads' handedness (``cg_handedness``) equals the centre's."""
    chain = ChainCentres(flat) if chain is None else chain
    counts: dict = {}
    cg = [0, 0]
    if not len(chain.pairs):
        return {"counts": counts}
    keys = chain.pair_keys()
    for frame in frames:
        positions, box = frame[0], frame[1]
        s = handedness(positions, box, chain.centres)
        rel = s[chain.pairs[:, 0]] * s[chain.pairs[:, 1]]
        for key, r in zip(keys, rel.tolist()):
            c = counts.setdefault(key, [0, 0])
            c[0 if r > 0 else 1] += 1
        if triples is not None and len(frame) > 2:
            s_cg = cg_handedness(triples, frame[2], box)
            seen = s_cg != 0
            cg[0] += int((s_cg[seen] == s[seen]).sum())
            cg[1] += int((s_cg[seen] != s[seen]).sum())
    out = {"counts": counts}
    if sum(cg):
        out["cg"] = cg
    return out


def learn_system_tacticity(flat, atom_bead, bead_types, cg_bonds, frames) -> dict:
    """``learn_tacticity`` over a system's frames (positions, box, CG beads), with its CG triples from the
    mapping arrays (``atom_bead``, ``bead_types``, ``cg_bonds``)."""
    chain = ChainCentres(flat)
    triples = cg_triples(chain.centres, atom_bead, bead_types, cg_bonds)
    return learn_tacticity(flat, frames, chain, triples)


def merge_tacticity(parts) -> dict:
    counts: dict = {}
    cg = [0, 0]
    for part in parts:
        for key, (eq, op) in (part or {}).get("counts", {}).items():
            c = counts.setdefault(key, [0, 0])
            c[0] += int(eq)
            c[1] += int(op)
        for k, v in enumerate((part or {}).get("cg", (0, 0))):
            cg[k] += int(v)
    out = {"counts": counts, "relations": tacticity_relations(counts)}
    if sum(cg):
        out["cg"] = cg
    return out


def tacticity_relations(counts: dict) -> dict:
    """{pair kind: +1 (equal handedness) or -1 (opposite)} for the pair kinds with a uniform relation."""
    out = {}
    for key, (eq, op) in counts.items():
        n = eq + op
        if n and max(eq, op) / n >= PATTERN_AGREEMENT:
            out[key] = 1 if eq > op else -1
    return out


def describe_tacticity(tacticity: dict) -> str:
    """'syndiotactic (...)' etc., named by the most frequent pair kind (the chain interior); pairs at chain
    ends have their own kinds, whose relation depends on how their roles are filled."""
    rel = (tacticity or {}).get("relations", {})
    counts = (tacticity or {}).get("counts", {})
    if not counts:
        return "no consecutive stereocentres"
    main = max(counts, key=lambda k: sum(counts[k]))
    n = sum(counts[main])
    if main not in rel:
        return f"atactic (consecutive centres equal in {counts[main][0]} of {n} pairs)"
    name = "syndiotactic: consecutive centres alternate" if rel[main] < 0 else \
        "isotactic: consecutive centres equal"
    return (f"{name} ({max(counts[main])} of {n} inner pairs); {len(rel)} of {len(counts)} pair kinds "
            "uniform, each applied")


# a chain whose signed volumes sum to less than this either way is a tie (e.g. two nearly flat centres)
TIE_VOTE = 0.05


class PatternTargets:
    """Handedness targets from a tacticity pattern. Each chain (centres joined by pairs whose relation is
    known) has two assignments the pattern allows; per frame, the one the generated centres already have
    is taken, each centre voting with its signed volume (``signed_volumes``), so that a clearly formed
    centre outweighs a nearly flat one (measured on short chains, where one centre may be generated each
    way: ``docs/MODEL.md``). A tie (``TIE_VOTE``) is broken by the CG beads: ``triples`` (``cg_triples``) and
    ``cg_sign``, the sign relating ``cg_handedness`` to the centres' handedness in the training data; then
    by +1."""

    def __init__(self, chain: ChainCentres, relations: dict, triples: np.ndarray | None = None, cg_sign: int = 0):
        self.chain = chain
        rel = np.array([relations.get(k, 0) for k in chain.pair_keys()], dtype=np.int64)
        m = len(chain.centres)
        self.relative = np.zeros(m, dtype=np.int64)
        adj = [[] for _ in range(m)]
        for (a, b), r in zip(chain.pairs.tolist(), rel.tolist()):
            if r:
                adj[a].append((b, r))
                adj[b].append((a, r))
        component = np.full(m, -1, dtype=np.int64)
        bad = set()
        n_comp = 0
        for start in range(m):
            if component[start] >= 0 or not adj[start]:
                continue
            component[start] = n_comp
            self.relative[start] = 1
            stack = [start]
            while stack:
                a = stack.pop()
                for b, r in adj[a]:
                    want = self.relative[a] * r
                    if component[b] < 0:
                        component[b] = n_comp
                        self.relative[b] = want
                        stack.append(b)
                    elif self.relative[b] != want:
                        bad.add(n_comp)
            n_comp += 1
        keep = (component >= 0) & ~np.isin(component, list(bad))
        self.centres = chain.centres[keep]
        self.triples = None if triples is None or not cg_sign else np.asarray(triples)[keep]
        self.cg_sign = int(cg_sign)
        self.component = component[keep]
        self.relative = self.relative[keep]
        self.n_chains = len(np.unique(self.component))
        self.n_unknown_pairs = int((rel == 0).sum())
        self.n_inconsistent = len(bad)

    def signs(self, positions, box, beads=None) -> np.ndarray:
        if not len(self.centres):
            return np.zeros(0, dtype=np.int64)
        return self.choose(signed_volumes(positions, box, self.centres), box, beads)

    def choose(self, votes: np.ndarray, box, beads=None) -> np.ndarray:
        """Targets from per-centre votes (m,) (positive: the centre's current handedness), the CG beads
        breaking ties."""
        n = self.component.max() + 1
        vote = np.zeros(n)
        np.add.at(vote, self.component, votes * self.relative)
        tie = np.zeros(n)
        if beads is not None and self.triples is not None:
            np.add.at(tie, self.component, self.cg_sign * cg_handedness(self.triples, beads, box) * self.relative)
        choice = np.where(vote > TIE_VOTE, 1, np.where(vote < -TIE_VOTE, -1, np.where(tie < 0, -1, 1)))
        return choice[self.component] * self.relative


class FixedTargets:
    """Handedness targets that do not depend on the frame (a table or an all-atom template)."""

    def __init__(self, centres: np.ndarray, signs: np.ndarray):
        self.centres, self._signs = centres, np.asarray(signs, dtype=np.int64)

    def signs(self, positions=None, box=None, beads=None) -> np.ndarray:
        return self._signs
