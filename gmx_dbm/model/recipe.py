"""Static tables for generating a system: per-bead atom sequences, interaction relations, prior terms.

Built once per (topology, mapping) from ``FlatTopology`` and the mapping's flat arrays; independent of
coordinates. All indices are global, 0-based, topology order. No Python loop here runs per frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

from ..errors import MappingError, ModelFileError

# relation bits of an environment atom j with respect to the atom i being placed
REL_BOND, REL_ANGLE, REL_DIHEDRAL, REL_EXCLUDED = 1, 2, 4, 8
N_RELATIONS = 4  # channels per atom type: bonded, angle partner, dihedral partner, non-bonded (LJ)



@dataclass
class FeatureSpec:
    """The model's channel vocabulary; saved in every checkpoint so a model applies to new topologies
    whose types it knows. ``bead_type_alias`` maps mapping bead types onto the model's bead channels."""
    atom_types: list
    bead_types: list
    bead_type_alias: dict

    @property
    def n_atom_types(self) -> int:
        return len(self.atom_types)

    @property
    def n_channels(self) -> int:
        # (atom type x relation) + current-bead atoms + one per bead type
        return self.n_atom_types * N_RELATIONS + 1 + len(self.bead_types)

    def to_dict(self) -> dict:
        return {"atom_types": list(self.atom_types), "bead_types": list(self.bead_types),
                "bead_type_alias": dict(self.bead_type_alias)}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(list(d["atom_types"]), list(d["bead_types"]), dict(d.get("bead_type_alias", {})))

    def bead_channel(self, bead_type: str, where: str = "") -> int:
        name = self.bead_type_alias.get(bead_type, bead_type)
        if name not in self.bead_types:
            raise ModelFileError(f"bead type {bead_type!r} is unknown to the model (it knows "
                                 f"{', '.join(self.bead_types)}); add a bead_type_alias", where=where or None)
        return self.bead_types.index(name)

    def atom_channel(self, atom_type: str, where: str = "") -> int:
        if atom_type not in self.atom_types:
            raise ModelFileError(f"atom type {atom_type!r} is unknown to the model (it knows "
                                 f"{', '.join(self.atom_types)})", where=where or None)
        return self.atom_types.index(atom_type)


class Recipe:
    """Generation plan and lookup tables for one system + mapping.

    Attributes (numpy unless noted):
      atom_bead (N,), atom_step (N,), bead_seq (nb, K) with -1 padding, bead_len (nb,),
      atom_channel (N,), bead_channel (nb,), is_heavy (N,), atom_mol (N,), bead_align (nb,),
      rel_keys / rel_codes (sorted int64 keys i*N+j and relation bit sets),
      prior tables: bonds/angles/dihedrals per atom (torch tensors, padded), lj c6/c12 by type.
    """

    def __init__(self, flat, mapping_flat, spec: FeatureSpec):
        self.flat = flat
        self.spec = spec
        N = flat.n_atoms
        self.n_atoms = N
        self.atom_bead = np.asarray(mapping_flat.atom_bead, dtype=np.int64)
        self.n_beads = int(len(mapping_flat.bead_types))
        self.bead_types = np.asarray(mapping_flat.bead_types)
        self.bead_align = np.asarray(mapping_flat.align, dtype=np.int64)
        self.bead_mol = np.asarray(mapping_flat.bead_mol, dtype=np.int64)
        self.atom_mol = np.asarray(flat.mol_index, dtype=np.int64)
        self.is_heavy = np.asarray(flat.is_heavy)
        self.atom_channel = np.asarray(
            [spec.atom_channel(t, where=f"atom {i + 1} {flat.names[i]}") for i, t in enumerate(flat.types)],
            dtype=np.int64)
        self.bead_channel = np.asarray(
            [spec.bead_channel(t, where=f"bead {b + 1}") for b, t in enumerate(self.bead_types)], dtype=np.int64)
        self._build_graph()
        self._build_colors()
        self._build_sequences()
        self._build_relations()
        self._build_prior_tables()

    # -- graph and sequences -------------------------------------------------------------------------
    def _build_graph(self):
        g = nx.Graph()
        g.add_nodes_from(range(self.n_atoms))
        for kind_func, (idx, _) in self.flat.bonded["bonds"].items():
            g.add_edges_from(map(tuple, idx.tolist()))
        self.graph = g

    def _build_colors(self):
        """Colour beads so that no two bonded beads share a colour (greedy; 2 colours for chains and trees).
        Gibbs sweeps update one colour at a time, so an atom never moves together with its bonded partners
        in neighbouring beads."""
        cg = nx.Graph()
        cg.add_nodes_from(range(self.n_beads))
        for i, j in self.graph.edges:
            bi, bj = self.atom_bead[i], self.atom_bead[j]
            if bi != bj:
                cg.add_edge(int(bi), int(bj))
        colors = nx.greedy_color(cg, strategy="largest_first")
        self.bead_color = np.asarray([colors[b] for b in range(self.n_beads)], dtype=np.int64)
        self.n_colors = int(self.bead_color.max()) + 1 if self.n_beads else 0

    def _build_sequences(self):
        """Per bead: heavy atoms depth-first along bonds, starting next to the align partner bead (an atom
        already placed in a chain-growing order), then hydrogens in the order of their heavy atoms."""
        members = [[] for _ in range(self.n_beads)]
        for a, b in enumerate(self.atom_bead):
            members[b].append(a)
        seqs = []
        for b, atoms in enumerate(members):
            if not atoms:
                raise MappingError("bead generates no atoms", where=f"bead {b + 1}")
            aset = set(atoms)
            heavy = [a for a in atoms if self.is_heavy[a]]
            hyd = [a for a in atoms if not self.is_heavy[a]]
            partner = self.bead_align[b]
            partner_atoms = set(np.nonzero(self.atom_bead == partner)[0].tolist()) if partner >= 0 else set()

            def touches(a, others):
                return any(n in others for n in self.graph.neighbors(a))

            start_pool = [a for a in heavy if touches(a, partner_atoms)] or \
                         [a for a in heavy if any(self.atom_bead[n] != b for n in self.graph.neighbors(a))] or heavy
            order = []
            heavy_set = set(heavy)
            sub = self.graph.subgraph(heavy_set)
            pending = list(heavy)
            starts = list(start_pool) + pending
            for s in starts:           # disconnected heavy atoms start new trees; none is dropped
                if s in order:
                    continue
                order.extend(n for n in nx.dfs_preorder_nodes(sub, s) if n not in order)
            rank = {a: k for k, a in enumerate(order)}

            def h_key(h):
                hn = [n for n in self.graph.neighbors(h) if n in rank]
                return (min(rank[n] for n in hn) if hn else len(order), h)

            order.extend(sorted(hyd, key=h_key))
            assert set(order) == aset
            seqs.append(order)
        K = max(len(s) for s in seqs)
        self.bead_seq = np.full((self.n_beads, K), -1, dtype=np.int64)
        self.atom_step = np.zeros(self.n_atoms, dtype=np.int64)
        for b, s in enumerate(seqs):
            self.bead_seq[b, :len(s)] = s
            self.atom_step[s] = np.arange(len(s))
        self.bead_len = np.asarray([len(s) for s in seqs], dtype=np.int64)
        self.n_steps = K

    # -- relations (for channels) --------------------------------------------------------------------
    def _build_relations(self):
        N = self.n_atoms
        keys, codes = [], []

        def add(i, j, code):
            keys.append(i * N + j); codes.append(code)
            keys.append(j * N + i); codes.append(code)

        for kind, code in (("bonds", REL_BOND), ("angles", REL_ANGLE), ("dihedrals", REL_DIHEDRAL)):
            for _, (idx, _) in self.flat.bonded[kind].items():
                for row in idx.tolist():
                    for x in range(len(row)):
                        for y in range(x + 1, len(row)):
                            if row[x] != row[y]:
                                add(row[x], row[y], code)
        for i, j in self.flat.exclusions.tolist():
            add(i, j, REL_EXCLUDED)
        if keys:
            k = np.asarray(keys, dtype=np.int64)
            c = np.asarray(codes, dtype=np.int64)
            order = np.argsort(k, kind="stable")
            k, c = k[order], c[order]
            uniq, start = np.unique(k, return_index=True)
            merged = np.bitwise_or.reduceat(c, start)
        else:
            uniq = np.zeros(0, dtype=np.int64); merged = np.zeros(0, dtype=np.int64)
        self.rel_keys = torch.from_numpy(uniq)
        self.rel_codes = torch.from_numpy(merged)

    def relations(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Relation bit sets for atom pairs (any shape); 0 = unrelated (non-bonded LJ partner)."""
        key = i * self.n_atoms + j
        t = self.tables(key.device)
        if t.rel_keys.numel() == 0:
            return torch.zeros_like(key)
        pos = torch.searchsorted(t.rel_keys, key.reshape(-1)).clamp_max(t.rel_keys.numel() - 1)
        hit = t.rel_keys[pos] == key.reshape(-1)
        return torch.where(hit, t.rel_codes[pos], torch.zeros_like(pos)).reshape(key.shape)

    def tables(self, device=None) -> "RecipeTables":
        """The lookup tables as torch tensors on ``device`` (made once per device): what the featuriser
        and the sampler index with tensors of that device."""
        dev = torch.device("cpu" if device is None else device)
        cache = self.__dict__.setdefault("_tables", {})
        if dev not in cache:
            cache[dev] = RecipeTables.build(self, dev)
        return cache[dev]

    # -- prior tables ----------------------------------------------------------------------------------
    def _build_prior_tables(self):
        """Per atom, the bonded terms it takes part in: partner atom indices with the atom's own slot
        marked -1, GROMACS func and parameters (file units). Padded into dense tensors."""
        N = self.n_atoms
        self.prior = {}
        for kind, width in (("bonds", 2), ("angles", 3), ("dihedrals", 4)):
            per_atom = [[] for _ in range(N)]
            for func, (idx, par) in self.flat.bonded[kind].items():
                for row, p in zip(idx.tolist(), par.tolist()):
                    for slot, a in enumerate(row):
                        per_atom[a].append((row, slot, func, p))
            m = max((len(x) for x in per_atom), default=0)
            m = max(m, 1)
            atoms = np.full((N, m, width), -1, dtype=np.int64)
            slots = np.zeros((N, m), dtype=np.int64)
            funcs = np.zeros((N, m), dtype=np.int64)
            params = np.zeros((N, m, 6), dtype=np.float64)
            valid = np.zeros((N, m), dtype=bool)
            for a, lst in enumerate(per_atom):
                for t, (row, slot, func, p) in enumerate(lst):
                    atoms[a, t] = row
                    slots[a, t] = slot
                    funcs[a, t] = func
                    params[a, t, :len(p)] = p[:6]
                    valid[a, t] = True
            self.prior[kind] = {k: torch.from_numpy(v) for k, v in
                                dict(atoms=atoms, slots=slots, funcs=funcs, params=params, valid=valid).items()}
        self.type_index = torch.from_numpy(np.asarray(self.flat.type_index, dtype=np.int64))
        self.lj_c6 = torch.from_numpy(np.asarray(self.flat.lj_c6, dtype=np.float64))
        self.lj_c12 = torch.from_numpy(np.asarray(self.flat.lj_c12, dtype=np.float64))


@dataclass
class RecipeTables:
    """``Recipe``'s per-atom and per-bead tables on one device (int64 indices, float32 parameters)."""
    atom_bead: torch.Tensor
    atom_step: torch.Tensor
    atom_mol: torch.Tensor
    is_heavy: torch.Tensor
    atom_channel: torch.Tensor
    bead_channel: torch.Tensor
    bead_seq: torch.Tensor
    bead_color: torch.Tensor
    bead_align: torch.Tensor
    rel_keys: torch.Tensor
    rel_codes: torch.Tensor
    type_index: torch.Tensor
    lj_c6: torch.Tensor
    lj_c12: torch.Tensor
    prior: dict

    @classmethod
    def build(cls, r: "Recipe", device) -> "RecipeTables":
        def t(a, dtype=None):
            x = torch.as_tensor(a)
            return x.to(device=device, dtype=dtype or x.dtype)
        prior = {kind: {k: t(v, torch.float32 if k == "params" else None) for k, v in tab.items()}
                 for kind, tab in r.prior.items()}
        return cls(t(r.atom_bead), t(r.atom_step), t(r.atom_mol), t(r.is_heavy), t(r.atom_channel),
                   t(r.bead_channel), t(r.bead_seq), t(r.bead_color), t(r.bead_align), t(r.rel_keys),
                   t(r.rel_codes), t(r.type_index), t(r.lj_c6, torch.float32), t(r.lj_c12, torch.float32), prior)
