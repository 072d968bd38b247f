"""Periodic pair search in torch: a binned cell list in fractional coordinates, on the positions' device.

``neighbor_pairs(positions (N, 3) nm, box (3, 3) rows a, b, c, cutoff)`` returns every pair i < j whose
minimum-image distance is below ``cutoff``, as int64 tensors on the positions' device, optionally with the
shift vectors (x_j - x_i + shift is the minimum-image vector of the given, unwrapped positions) and the
distances. The force field (``ForceField.pairs``) and the thermalisation's Verlet list
(``RestrainedLangevin``) both use it.

Exactness: the search refuses (InputError) a cut-off longer than half the smallest box height, as grompp
does; below that at most one periodic image of a pair lies within the cut-off, and that image has a
fractional difference |ds_k| < cutoff / h_k <= 1/2 along every box vector, so rounding the fractional
difference finds it. Cells are 1/n_k of box vector k with n_k = floor(CELLS_PER_CUTOFF h_k / cutoff)
(slightly fewer for a float margin): a pair within the cut-off lies at most CELLS_PER_CUTOFF cells apart
along each axis. With at least 2 CELLS_PER_CUTOFF + 1 cells along every axis a half shell of cell offsets
visits each cell pair once; in thinner boxes, along an axis with fewer cells every cell is visited and
pairs are kept where i < j, so no pair is listed twice. Any box shape works (the fractional reduction
does not rely on GROMACS' shape limits).

Memory and time are O(N) for a given density: candidates are expanded in chunks of at most ``chunk``
(about 80 bytes each). (atom, cell) entries whose cell lies beyond the cut-off from the atom (a lower bound
of the distance from the fractional gaps) are skipped before the expansion: measured on a 5832-atom sPS
frame at 0.8 nm, 3.1 million candidates without, 1.7 million with, for 0.61 million pairs. Shift vectors
are made per block too. Peak RSS and time: ``benchmarks/bench_neighbors.py`` (58320 atoms, 0.8 nm, 6.1
million pairs, one thread: 837 MB float32 with shifts, 921 MB float64 with distances, from 226 MB before
the search; 990 and 1346 MB with 4M-candidate blocks on the CPU).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .errors import InputError
from .geometry import box_heights, box_problem

# cells per cut-off length along each box height: 2 gives half-width cells and 63 half-shell offsets
# (about half the candidates of cut-off-wide cells, measured above)
CELLS_PER_CUTOFF = 2
CHUNK = 1 << 22   # candidate pairs per block on an accelerator (~330 MB of temporaries at most)
# on the CPU: blocks of 32 MB float64 temporaries are mapped, faulted in and unmapped by the allocator on
# every operation; 8 MB ones stay in the heap (measured on the 5832-atom sPS frame at 1.0 nm, one thread:
# float64 0.71 s per search with 4M-candidate blocks, 0.29 s with 1M; float32 0.19 s either way)
CHUNK_CPU = 1 << 20
# cells a little wider than cutoff / CELLS_PER_CUTOFF, so that float rounding of the fractional
# coordinates cannot put a pair within the cut-off one cell further apart than the shell reaches
_CELL_MARGIN = 1e-3


def check_cutoff(box, cutoff: float, where: str | None = None, long_cutoff: bool = False) -> np.ndarray:
    """The box heights (3,) of a usable box for ``cutoff``; InputError for an unusable box or, unless
    ``long_cutoff``, a cut-off longer than half the smallest box height (grompp's rule: the minimum image
    is not unique)."""
    bx = np.asarray(box.detach().cpu().double() if torch.is_tensor(box) else box, dtype=np.float64)
    problem = box_problem(bx)
    if problem is not None:
        raise InputError(f"pair search: {problem}", where=where)
    if not cutoff > 0:
        raise InputError(f"pair search: the cut-off must be positive, got {cutoff:g} nm", where=where)
    h = box_heights(bx)
    if not long_cutoff and cutoff > 0.5 * h.min() * (1 + 1e-12):
        raise InputError(f"the cut-off {cutoff:g} nm is longer than half the smallest box height "
                         f"({h.min():g} nm): the minimum image is not unique (grompp refuses this box too); "
                         "use a shorter cut-off (-f MDP: rvdw, rcoulomb) or a larger box", where=where)
    return h


def _grid(heights: np.ndarray, cutoff: float, n_atoms: int) -> tuple:
    """Cells per box vector, the cell offsets to visit, and whether they are a half shell."""
    m = CELLS_PER_CUTOFF
    n = [max(1, int(math.floor(m * h / cutoff / (1 + _CELL_MARGIN)))) for h in heights]
    # dilute systems: no more cells than ~4 per atom (wider cells stay exact, only slower per atom)
    cap = max(64, 4 * n_atoms)
    while n[0] * n[1] * n[2] > cap:
        n = [max(1, k * 3 // 4) for k in n]
    half = all(k >= 2 * m + 1 for k in n)
    per_axis = [range(-m, m + 1) if k >= 2 * m + 1 else range(k) for k in n]
    offsets = list(itertools.product(*per_axis))
    if half:   # one of each (o, -o), and o = 0 (pairs inside a cell are then taken once by their order)
        offsets = [o for o in offsets if o >= (0, 0, 0)]
    return n, offsets, half


def neighbor_pairs(positions, box, cutoff: float, shifts: bool = False, distances: bool = False,
                   chunk: int | None = None, where: str | None = None, long_cutoff: bool = False,
                   keep=None, index_dtype=torch.int64) -> tuple:
    """All pairs i < j of one frame with minimum-image distance below ``cutoff`` (nm).

    positions (N, 3) and box (3, 3) (rows a, b, c), numpy or tensors; the search runs on the positions'
    device in their float dtype (float32 or float64; other dtypes in float64). Returns (i, j) int64
    tensors, then (shift (P, 3),) if ``shifts`` (x_j - x_i + shift is the minimum-image vector) and
    (distance (P,),) if ``distances``. Pairs come grouped by cell, in a fixed order for given inputs.
    InputError for an unusable box (see ``check_cutoff``).

    ``long_cutoff``: any cut-off (environment searches); each pair is listed once, at its exact
    minimum-image distance. Along a box vector whose height h is below twice the cut-off every cell is
    visited, and the images within ceil(cutoff / h - 1/2) box vectors of the rounded one are compared
    (in a triclinic box the rounded image need not be the shortest there). No ``shifts`` then.

    ``keep``: a function of (i, j) (int64, i < j) giving a bool mask of the pairs to return (the force
    field's exclusions), applied per block, so that the unfiltered list is never made; ``index_dtype``:
    of the returned indices (int32 halves the list of a large box)."""
    x = torch.as_tensor(positions)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.double()
    if x.dim() != 2 or x.shape[-1] != 3:
        raise InputError(f"pair search: positions must be (N, 3), got {tuple(x.shape)}", where=where)
    dev, dt = x.device, x.dtype
    if chunk is None:
        chunk = CHUNK_CPU if dev.type == "cpu" else CHUNK
    cutoff = float(cutoff)
    heights = check_cutoff(box, cutoff, where, long_cutoff)
    box64 = np.asarray(box.detach().cpu().double() if torch.is_tensor(box) else box, dtype=np.float64)
    # images to compare per pair beyond the rounded one: only along box vectors shorter than 2 cut-offs
    reach = [max(0, math.ceil(cutoff / h - 0.5)) if cutoff > 0.5 * h else 0 for h in heights]
    if shifts and any(reach):
        raise ValueError("pair search: shift vectors need a cut-off below half the smallest box height")
    images = [tuple(float(v) for v in np.asarray(n, dtype=np.float64) @ box64)
              for n in itertools.product(*(range(-m, m + 1) for m in reach)) if any(n)]
    n_atoms = x.shape[0]
    extra = ((torch.zeros(0, 3, dtype=dt, device=dev),) if shifts else ()) + \
            ((torch.zeros(0, dtype=dt, device=dev),) if distances else ())
    empty = torch.zeros(0, dtype=index_dtype, device=dev)
    if n_atoms < 2:
        return (empty, empty.clone()) + extra
    s = x.detach() @ torch.as_tensor(np.linalg.inv(box64), dtype=dt, device=dev)
    wrap = torch.floor(s)
    s = s - wrap                                    # in [0, 1] (1 only by rounding)
    n, offsets, half = _grid(heights, cutoff, n_atoms)
    nt = torch.tensor(n, dtype=torch.int64, device=dev)
    cell = torch.minimum((s * nt.to(dt)).long(), nt - 1)          # (N, 3)
    cid = (cell[:, 0] * n[1] + cell[:, 1]) * n[2] + cell[:, 2]
    order = torch.argsort(cid, stable=True)
    n_cells = n[0] * n[1] * n[2]
    counts = torch.bincount(cid, minlength=n_cells)
    start = torch.cumsum(counts, 0) - counts
    cell_s, cid_s = cell[order], cid[order]                      # sorted atoms' cells
    s_sorted = s[order]
    ss = [s_sorted[:, k].contiguous() for k in range(3)]         # components: 1-D gathers are fastest
    rank = torch.arange(n_atoms, device=dev)
    off = torch.tensor(offsets, dtype=torch.int64, device=dev)    # (K, 3)
    n_off = len(offsets)
    zero = offsets.index((0, 0, 0)) if half else None
    # culling of (atom, cell) entries: a lower bound of the distance from the atom to the cell, from the
    # fractional gaps g_k scaled by the heights h_k: max(max_k (g_k h_k)^2, lam sum_k (g_k h_k)^2) with lam
    # the smallest eigenvalue of the height-scaled metric (1 for a rectangular box)
    hs = np.asarray(heights, dtype=np.float64)
    metric = (box64 @ box64.T) / np.outer(hs, hs)
    lam = float(max(0.0, np.linalg.eigvalsh(metric).min()))
    scale = torch.tensor([hs[k] if n[k] >= 2 * CELLS_PER_CUTOFF + 1 else 0.0 for k in range(3)], dtype=dt,
                         device=dev)   # axes where every cell is visited: no unwrapped offset, no bound
    ntf = nt.to(dt)
    cut2 = cutoff * cutoff

    def ranges(a0, a1):
        """Candidate ranges (start in sorted order, length) of sorted atoms a0..a1 x every offset."""
        c = cell_s[a0:a1, None, :] + off[None]                              # (n, K, 3), unwrapped
        lo = c.to(dt) / ntf
        sa = s_sorted[a0:a1, None, :]
        gap = torch.clamp(torch.maximum(lo - sa, sa - lo - 1.0 / ntf), min=0.0) * scale
        g2 = gap * gap
        far = torch.maximum(g2.amax(-1), lam * g2.sum(-1)) >= cut2
        c = c % nt
        nc = (c[..., 0] * n[1] + c[..., 1]) * n[2] + c[..., 2]
        st, ln = start[nc], counts[nc]
        if zero is not None:   # own cell in a half shell: only the atoms after this one
            own_end = start[cid_s[a0:a1]] + counts[cid_s[a0:a1]]
            st[:, zero] = rank[a0:a1] + 1
            ln[:, zero] = own_end - st[:, zero]
        ln = ln.masked_fill(far, 0)
        return st, ln

    # atoms per block so that a block holds at most ~chunk candidates (one host sync per search)
    first = ranges(0, min(65536, n_atoms))
    per_atom = torch.cat([first[1].sum(1)] + [ranges(a, min(a + 65536, n_atoms))[1].sum(1)
                                              for a in range(65536, n_atoms, 65536)])
    cum = torch.cumsum(per_atom, 0).cpu().numpy()
    bounds = [0]
    while bounds[-1] < n_atoms:
        base = cum[bounds[-1] - 1] if bounds[-1] else 0
        nxt = int(np.searchsorted(cum, base + chunk, side="right"))
        bounds.append(min(n_atoms, max(nxt, bounds[-1] + 1)))
    b = [[float(box64[r, c]) for c in range(3)] for r in range(3)]
    out_i, out_j, out_d, out_s = [], [], [], []
    bt = torch.as_tensor(box64, dtype=dt, device=dev)
    wrap_s = [wrap[order, k].contiguous() for k in range(3)] if shifts else None
    for a0, a1 in zip(bounds[:-1], bounds[1:]):
        total = int(cum[a1 - 1] - (cum[a0 - 1] if a0 else 0))
        if total == 0:
            continue
        st, ln = first if (a0, a1) == (0, min(65536, n_atoms)) else ranges(a0, a1)
        st, ln = st.reshape(-1), ln.reshape(-1)
        entry = torch.repeat_interleave(torch.arange(len(ln), device=dev), ln, output_size=total)
        delta = torch.cumsum(ln, 0) - ln - st
        jpos = torch.arange(total, device=dev) - delta.index_select(0, entry)
        del entry, delta
        ipos = torch.repeat_interleave(rank[a0:a1], ln.view(a1 - a0, n_off).sum(1), output_size=total)
        f, rounded = [], []
        for k in range(3):
            dk = ss[k].index_select(0, jpos) - ss[k].index_select(0, ipos)
            rk = torch.round(dk)
            f.append(dk.sub_(rk))
            if shifts:
                rounded.append(rk)
        # Cartesian components of the reduced fractional difference (box rows a, b, c lower triangular)
        dz = f[2] * b[2][2]
        dy = f[1] * b[1][1] + f[2] * b[2][1]
        dx = f[0] * b[0][0] + f[1] * b[1][0] + f[2] * b[2][0]
        r2 = dx * dx + dy * dy + dz * dz
        for sx, sy, sz in images:   # long cut-offs: the shortest of the nearby images
            r2 = torch.minimum(r2, (dx + sx).square_() + (dy + sy).square_() + (dz + sz).square_())
        del f, dx, dy, dz
        sel = torch.nonzero(r2 < cut2).squeeze(1)
        ip, jp = ipos.index_select(0, sel), jpos.index_select(0, sel)
        ia, ja = order.index_select(0, ip), order.index_select(0, jp)
        r2 = r2.index_select(0, sel)
        image = None
        if shifts:
            # integer image of each pair (x_j - x_i + shift is the minimum image): the rounded fractional
            # difference of the wrapped coordinates plus the atoms' wraps; per block, so that no temporaries
            # of the size of the whole list are made
            image = torch.stack([rounded[k].index_select(0, sel) + wrap_s[k].index_select(0, jp)
                                 - wrap_s[k].index_select(0, ip) for k in range(3)], dim=-1)
        del rounded
        if half:
            if image is not None:
                image = torch.where((ia > ja).unsqueeze(-1), -image, image)
            ia, ja = torch.minimum(ia, ja), torch.maximum(ia, ja)
        masks = ([] if half else [lambda a, b: a < b]) + ([] if keep is None else [keep])
        for mask in masks:   # the i < j order first: ``keep`` sees only pairs in it
            sel = torch.nonzero(mask(ia, ja)).squeeze(1)
            ia, ja, r2 = ia.index_select(0, sel), ja.index_select(0, sel), r2.index_select(0, sel)
            if image is not None:
                image = image.index_select(0, sel)
        out_i.append(ia.to(index_dtype))
        out_j.append(ja.to(index_dtype))
        if distances:
            out_d.append(r2)
        if image is not None:
            out_s.append(-(image @ bt))
        del ia, ja, r2, image
    if not out_i:
        return (empty, empty.clone()) + extra
    i, j = torch.cat(out_i), torch.cat(out_j)
    del out_i, out_j
    extra = ()
    if shifts:
        extra += (torch.cat(out_s),)
    if distances:
        extra += (torch.sqrt(torch.cat(out_d)),)
    return (i, j) + extra


def periodic_pairs(pos, box, cutoff: float, long_cutoff: bool = False) -> tuple:
    """``neighbor_pairs`` for numpy callers (analysis, quality checks, the featuriser's bead search): all
    pairs i < j of one frame with minimum-image distance below ``cutoff`` nm, as (i int64, j int64,
    d float64) arrays, searched in float64 on the CPU. InputError (a ValueError) for an unusable box or, unless
    ``long_cutoff``, a cut-off longer than half the smallest box height."""
    x = torch.as_tensor(np.asarray(pos, dtype=np.float64))
    i, j, d = neighbor_pairs(x, np.asarray(box, dtype=np.float64), cutoff, distances=True,
                             long_cutoff=long_cutoff)
    return i.numpy(), j.numpy(), d.numpy()
