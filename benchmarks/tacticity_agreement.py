"""How well each chain's absolute handedness is chosen: with a tacticity pattern, the relative handedness of
consecutive centres is fixed and each chain keeps one free sign, taken from the generated frame (the
assignment more of its generated centres already have). This scores that choice, and the simpler CG
signal sign((BB_prev - BB) x (BB_next - BB) . (SC - BB)) per inner centre, against the all-atom reference.

Usage: python benchmarks/tacticity_agreement.py [--frames 8] [--model sps]
       [--reference AA.xtc --cg CG.xtc --topology TOP --offset 0]
Reads sps/t453 of the published sPS reference data by default ($GMX_DBM_SHARED_DATA; default: shared/data
beside the repository; there CG frame j belongs to all-atom frame j+1, ``--offset 1``); other systems (e.g.
the chain mixture of ``scripts/make_chain_mixture.py``, whose CG frames were mapped from its own all-atom
frames: ``--offset 0``) with the options. Prints a table, with the chain rows per moleculetype, for the
signed-volume vote the backmap uses and for one vote per centre.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GMX_DBM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def cg_signs(flat, mflat, chain, beads):
    """Per centre: the CG triple-product sign, 0 where the centre's bead lacks two backbone neighbours."""
    from gmx_dbm.geometry import minimum_image
    atom_bead = np.asarray(mflat.atom_bead)
    types = np.asarray(mflat.bead_types)
    nb = [[] for _ in range(mflat.n_beads)]
    for i, j in np.asarray(mflat.cg_bonds).tolist():
        nb[i].append(j)
        nb[j].append(i)
    out = np.zeros(len(chain.centres), dtype=np.int64)
    pos, box = beads
    for k, c in enumerate(chain.centres[:, 0]):
        b = atom_bead[c]
        bb = sorted(x for x in nb[b] if types[x] == types[b])
        sc = [x for x in nb[b] if types[x] != types[b]]
        if len(bb) != 2 or len(sc) != 1:
            continue
        v = [minimum_image(pos[x] - pos[b], box) for x in (bb[0], bb[1], sc[0])]
        out[k] = int(np.sign(np.dot(np.cross(v[0], v[1]), v[2])))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--model", default="sps")
    ap.add_argument("--reference", default=None, help="all-atom frames (default: sps/t453/aa.xtc)")
    ap.add_argument("--cg", default=None, help="CG frames (default: sps/t453/cg.xtc)")
    ap.add_argument("--topology", default=str(ROOT / "topologies" / "sps.top"))
    ap.add_argument("--mapping", default=str(ROOT / "mappings" / "sps.map"))
    ap.add_argument("--offset", type=int, default=None, help="all-atom frame of CG frame j is j + offset "
                    "(default 1 for sps/t453, else 0)")
    args = ap.parse_args()
    t453 = SHARED / "sps" / "t453"
    ref_path = Path(args.reference) if args.reference else t453 / "aa.xtc"
    cg_path = Path(args.cg) if args.cg else t453 / "cg.xtc"
    offset = args.offset if args.offset is not None else (0 if args.cg else 1)
    if not cg_path.is_file() or not ref_path.is_file():
        raise SystemExit(f"frames not found: {cg_path}, {ref_path}")
    import torch

    from gmx_dbm import stereo
    from gmx_dbm.backmap import Backmapper
    from gmx_dbm.backmap import steps as S
    from gmx_dbm.io import read_frames
    from gmx_dbm.mapping import read_mapping
    from gmx_dbm.topology import read_topology
    system = read_topology(args.topology)
    smap = read_mapping([args.mapping], system)
    bm = Backmapper.build(system, smap, args.model, md_steps=0, stereo="auto")
    targets = bm.stereo_targets
    flat, mflat = bm.flat, bm.mflat
    cg = list(read_frames(cg_path))
    aa = list(read_frames(ref_path))
    pick = np.linspace(0, min(len(cg), len(aa) - offset) - 1, args.frames).round().astype(int)
    mol = np.asarray(flat.mol_index)[targets.centres[:, 0]]
    mol_type = np.asarray(flat.mol_type)[mol]
    mols = np.unique(mol)
    type_of = {m: mol_type[mol == m][0] for m in mols}
    kinds = sorted(set(type_of.values()))
    rows = {"generated centres as the reference": []}
    for t in kinds:
        rows[f"{t} chains chosen as the reference"] = []
        rows[f"{t} chains, one vote per centre"] = []
    rows.update({"CG sign = reference (inner centres)": [], "chains by CG-sign majority as the reference": []})
    votes = []
    first_steps = [s for s in bm.steps if isinstance(s, (S.Generate, S.ProjectBonds, S.RedrawDefects))]
    for j in pick:
        ref = aa[j + offset]
        s_ref = stereo.handedness(ref.positions, ref.box, targets.centres)
        work = S.FrameWork(int(j), np.asarray(cg[j].positions), np.asarray(cg[j].box, dtype=np.float64),
                           torch.Generator().manual_seed(int(j)))
        with torch.no_grad():
            for step in first_steps:
                step(work)
        x = work.positions.double().numpy()
        s_gen = stereo.handedness(x, work.box, targets.centres)
        chosen = targets.signs(x, work.box, beads=work.centres)
        # one vote per centre, the CG beads on a tie: the vote before signed volumes
        plain = targets.choose(s_gen, work.box, beads=work.centres)
        rows["generated centres as the reference"].append(np.mean(s_gen == s_ref))
        for t in kinds:
            of = [m for m in mols if type_of[m] == t]
            rows[f"{t} chains chosen as the reference"].append(
                np.mean([np.all(chosen[mol == m] == s_ref[mol == m]) for m in of]))
            rows[f"{t} chains, one vote per centre"].append(
                np.mean([np.all(plain[mol == m] == s_ref[mol == m]) for m in of]))
        s_cg = cg_signs(flat, mflat, targets, (np.asarray(cg[j].positions), np.asarray(cg[j].box)))
        inner = s_cg != 0
        rows["CG sign = reference (inner centres)"].append(np.mean(s_cg[inner] == s_ref[inner]))
        for m in np.unique(mol):
            sel = (mol == m) & inner
            votes.append((int(np.sum(s_cg[sel] * targets.relative[sel])), targets.relative[mol == m], s_ref[mol == m]))
    # the CG signal's sign convention is fitted on these same frames, so this row is optimistic
    convention = 1 if np.mean(rows["CG sign = reference (inner centres)"]) >= 0.5 else -1
    per_frame = len(votes) // len(pick)
    for f in range(len(pick)):
        part = votes[f * per_frame:(f + 1) * per_frame]
        rows["chains by CG-sign majority as the reference"].append(
            np.mean([np.all(convention * np.sign(v or 1) * rel == ref) for v, rel, ref in part]))
    from gmx_dbm.devices import cpu_name
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; model {args.model}; "
          f"{len(pick)} frames of {cg_path.name} / {ref_path.name}, {len(targets.centres)} centres in {targets.n_chains} "
          "chains per frame")
    print(f"{'measure':48s} {'mean':>7s} {'min':>7s}")
    for name, v in rows.items():
        print(f"{name:48s} {np.mean(v):7.3f} {np.min(v):7.3f}")


if __name__ == "__main__":
    main()
