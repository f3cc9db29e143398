"""Exact k-reciprocal re-ranking (Zhong et al., CVPR 2017) in O(N * k + Q * G) memory, on CPU or GPU."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from sag.evaluation import _checks
from sag.evaluation._ops import exclusive_cumsum, flat_nonzero, padded_mask

# Work sizes on a CPU; a GPU takes 16 times more at once (fewer, larger kernels; its memory is not the limit).
_BLOCK = 2048  # rows / columns of one block of the N x N distance matrix (x4 on a GPU)
_ROWS = 1024  # images handled at once in the neighbour-set steps
_PAIR_BUDGET = 1 << 20  # (entry, entry) pairs expanded at once in query expansion and the Jaccard step
_GATHER_BUDGET = 1 << 21  # feature values gathered at once for scattered distances (small temporaries are reused)


def _scale(device: torch.device) -> int:
    """How many times the CPU work sizes to take at once on ``device``."""
    return 16 if device.type == "cuda" else 1


class _Neighbours(NamedTuple):
    """Nearest images of every image, and the distances kept to look up more of them later."""

    index: torch.Tensor  # (N, k) int64: nearest images, sorted by (normalised distance, index)
    row_max: torch.Tensor  # (N,) largest squared distance of each image to any of the N images
    kept_index: torch.Tensor  # (N, m) int64, m >= k: a superset of the nearest images, sorted by index
    kept_dist: torch.Tensor  # (N, m) their squared distances (not normalised)


def re_ranking(q_feats: Any, g_feats: Any, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> torch.Tensor:
    """Re-ranked (Q, G) query-gallery distances by k-reciprocal encoding (Zhong et al., CVPR 2017), exactly.

    Follows the authors' reference code (person-re-ranking, ``python-version/re_ranking_ranklist.py``) on the
    N = Q + G images: the original distance is the squared Euclidean distance between the features, each row
    divided by its maximum over all N images (for L2-normalised features, 2 - 2 cos); R(p, k1) holds the
    k-reciprocal neighbours among the k1 + 1 nearest images; each member's own k-reciprocal set at
    round(k1 / 2) + 1 is added when more than 2/3 of it lies in R(p, k1); the weights exp(-distance) over this
    set, normalised to sum 1, form V; query expansion averages V over the k2 nearest images (skipped when
    k2 = 1); the Jaccard distance between V rows is combined as ``jaccard * (1 - lambda_value) + original *
    lambda_value``; its query rows and gallery columns are returned as a (Q, G) tensor.

    The reference holds several dense N x N arrays (about 8.5 GiB for Market-1501). Here the N x N distances
    are computed block by block and only the nearest-neighbour lists, a sparse V and the (Q, G) result are
    kept, so memory grows with N * k1 * k2 + Q * G. Exact ties in distance are broken by image index (queries
    first, then gallery images), where the reference's ``np.argsort`` leaves them unspecified. The work runs on
    the device of ``q_feats`` (a tensor, else the CPU) in float32, or in float64 if either input is float64.
    """
    q = _checks.float_matrix(q_feats, "q_feats", rows="query")
    g = _checks.float_matrix(g_feats, "g_feats", q.device, rows="gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"q_feats and g_feats must have the same feature size, got {q.shape[1]} and {g.shape[1]}")
    k1 = _checks.positive_int(k1, "k1")
    k2 = _checks.positive_int(k2, "k2")
    if isinstance(lambda_value, bool) or not isinstance(lambda_value, (int, float)) or not 0 <= lambda_value <= 1:
        raise ValueError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}")
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    num_q, num, dim = q.shape[0], q.shape[0] + g.shape[0], q.shape[1]
    # Rows [x, |x|^2, 1] and [-2 y, 1, |y|^2] have dot product |x - y|^2: each distance block is one matrix product.
    left = torch.empty(num, dim + 2, dtype=dtype, device=q.device)  # (N, D + 2)
    right = torch.empty_like(left)
    feats = left[:, :dim]  # (N, D): queries, then gallery
    feats[:num_q], feats[num_q:] = q, g
    _checks.check_finite(feats, "q_feats / g_feats")
    sq = torch.linalg.vecdot(feats, feats)  # (N,)
    left[:, dim], left[:, dim + 1] = sq, 1
    torch.mul(feats, -2, out=right[:, :dim])
    right[:, dim], right[:, dim + 1] = 1, sq
    half = int(np.around(k1 / 2.0)) + 1  # the reference's rounding (half to even)
    nn, qg = _nearest_neighbours(left, right, min(num, max(k1 + 1, k2, half)), num_q)
    rows, cols, vals = _k_reciprocal_weights(left, right, nn, min(k1 + 1, num), min(half, num))
    if k2 != 1:
        rows, cols, vals = _query_expansion(nn.index[:, : min(k2, num)], rows, cols, vals)
    return _jaccard_combine(rows, cols, vals, qg, nn.row_max[:num_q], float(lambda_value))


def _nearest_neighbours(
    left: torch.Tensor, right: torch.Tensor, k: int, num_q: int
) -> tuple[_Neighbours, torch.Tensor]:
    """The ``k`` nearest images of each image and the (Q, G) squared distances, one N x N block at a time."""
    num, dtype, device = left.shape[0], left.dtype, left.device
    keep = min(num, k + 8)  # a margin beyond the k-th: settles ties that appear when normalising
    row_max = torch.zeros(num, dtype=dtype, device=device)
    qg = torch.empty(num_q, num - num_q, dtype=dtype, device=device)
    block = _BLOCK * (4 if device.type == "cuda" else 1)  # 16 x the elements
    top = _TopK(num, keep, block, dtype, device)
    buffer = torch.empty(min(num, block) ** 2, dtype=dtype, device=device)  # reused: no allocation per block
    starts = range(0, num, block)
    # diagonal blocks first, so that every row has a full list (and a bound) before the off-diagonal blocks
    pairs = [(a, a) for a in starts] + [(a, c) for a in starts for c in starts if c > a]
    for a, c in tqdm(pairs, desc="re-ranking: distances", disable=None, leave=False):
        a_end, c_end = min(a + block, num), min(c + block, num)
        dist = buffer[: (a_end - a) * (c_end - c)].view(a_end - a, c_end - c)
        torch.mm(left[a:a_end], right[c:c_end].T, out=dist)  # may dip below 0 by rounding: clamped when kept
        if a == c:
            dist.fill_diagonal_(0)  # exact self-distances
        row_max[a:a_end] = torch.maximum(row_max[a:a_end], dist.amax(1))
        top.update(a, dist, c)
        if c != a:
            row_max[c:c_end] = torch.maximum(row_max[c:c_end], dist.amax(0))
            top.update(c, dist, a, transposed=True)
        if a < num_q and c_end > num_q:
            r_end, c0 = min(a_end, num_q), max(c, num_q)
            qg[a:r_end, c0 - num_q : c_end - num_q] = dist[: r_end - a, c0 - c :]
    if not bool((row_max > 0).all()):
        raise ValueError("all features are identical: their distances cannot be normalised")
    qg.clamp_(min=0)

    # Order the kept images by (normalised distance, index), as the reference's argsort of the normalised rows.
    kept_index, perm = torch.sort(top.index, dim=1)
    kept_dist = top.dist.gather(1, perm)
    normalised = kept_dist / row_max[:, None]
    order = torch.sort(normalised, dim=1, stable=True)
    index = kept_index.gather(1, order.indices[:, :k])
    if keep < num:
        # An image outside the kept ones could tie with the k-th after normalising: rank those rows in full.
        unsettled = (top.dist.amax(1) / row_max <= order.values[:, k - 1]).nonzero().squeeze(1)
        for chunk in unsettled.split(max(1, _GATHER_BUDGET * _scale(device) // (4 * num))):
            dist = (left[chunk] @ right.T).clamp_(min=0)  # (b, N)
            dist[torch.arange(chunk.numel(), device=device), chunk] = 0
            index[chunk] = torch.sort(dist / row_max[chunk, None], dim=1, stable=True).indices[:, :k]
    return _Neighbours(index, row_max, kept_index, kept_dist), qg


class _TopK:
    """Running ``keep`` smallest distances per row over column blocks (ties at the boundary: any of them)."""

    def __init__(self, num: int, keep: int, block: int, dtype: torch.dtype, device: torch.device) -> None:
        self.keep = keep
        self.dist = torch.full((num, keep), torch.inf, dtype=dtype, device=device)  # (N, keep)
        self.index = torch.full((num, keep), -1, dtype=torch.int64, device=device)
        self._mask = torch.empty(min(num, block) ** 2, dtype=torch.bool, device=device)  # reused

    def update(self, row0: int, block: torch.Tensor, col0: int, transposed: bool = False) -> None:
        """Offer ``block`` (rows row0.., columns col0..; with ``transposed``, its columns are the rows) to the lists."""
        num_r = block.shape[1] if transposed else block.shape[0]
        rows = slice(row0, row0 + num_r)
        bound = self.dist[rows].amax(1)  # the current keep-th smallest distance of each row (lists are unordered)
        if bool(torch.isinf(bound).any()):  # rows seen for the first time: plain top-k of the block
            dim = 0 if transposed else 1
            dist, idx = block.topk(min(self.keep, block.shape[dim]), dim=dim, largest=False, sorted=False)
            if transposed:
                dist, idx = dist.T, idx.T
            self._merge(rows, dist.clamp(min=0), idx + col0)
            return
        # Later blocks: only entries below a row's bound can enter its list, and there are few of them.
        mask, flat = padded_mask(self._mask, block.shape)
        torch.lt(block, bound[None, :] if transposed else bound[:, None], out=mask)
        pos = flat_nonzero(flat)  # ascending positions in the block
        if pos.numel() == 0:
            return
        values = block.view(-1)[pos].clamp_(min=0)
        b_row, b_col = pos // block.shape[1], pos % block.shape[1]
        if transposed:  # the list's rows are the block's columns: group the candidates by them
            order = torch.sort(b_col, stable=True).indices
            r_idx, c_idx, values = b_col[order], b_row[order], values[order]
        else:
            r_idx, c_idx = b_row, b_col
        # pad the candidates of each row that has some into a (those rows, most candidates) array and merge
        cand_rows, counts = torch.unique_consecutive(r_idx, return_counts=True)
        group = torch.repeat_interleave(torch.arange(cand_rows.numel(), device=pos.device), counts)
        slot = torch.arange(pos.numel(), device=pos.device) - exclusive_cumsum(counts)[group]
        dist = torch.full((cand_rows.numel(), int(counts.max())), torch.inf, dtype=block.dtype, device=block.device)
        idx = torch.full(dist.shape, -1, dtype=torch.int64, device=block.device)
        dist[group, slot] = values
        idx[group, slot] = c_idx + col0
        self._merge(cand_rows + row0, dist, idx)

    def _merge(self, rows: slice | torch.Tensor, dist: torch.Tensor, idx: torch.Tensor) -> None:
        """Merge candidate (distance, index) lists of ``rows`` into the running lists."""
        all_dist = torch.cat([self.dist[rows], dist], dim=1)
        all_idx = torch.cat([self.index[rows], idx], dim=1)
        best, pos = all_dist.topk(self.keep, dim=1, largest=False, sorted=False)
        self.dist[rows] = best
        self.index[rows] = all_idx.gather(1, pos)


def _reciprocal_mask(lists: torch.Tensor) -> torch.Tensor:
    """(N, k) bool: is image i among the first k neighbours of its a-th neighbour ``lists[i, a]``?"""
    out = torch.empty(lists.shape, dtype=torch.bool, device=lists.device)
    step = _ROWS * _scale(lists.device)
    for start in range(0, lists.shape[0], step):
        chunk = lists[start : start + step]  # (b, k)
        me = torch.arange(start, start + chunk.shape[0], device=lists.device)
        out[start : start + chunk.shape[0]] = (lists[chunk] == me[:, None, None]).any(-1)
    return out


def _k_reciprocal_weights(
    left: torch.Tensor, right: torch.Tensor, nn: _Neighbours, k_full: int, k_half: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """V as sorted COO (rows, cols int32; values): exp(-distance) over each expanded k-reciprocal set, rows sum to 1."""
    num = left.shape[0]
    full = nn.index[:, :k_full]  # (N, k1 + 1)
    half = nn.index[:, :k_half]  # (N, round(k1 / 2) + 1)
    full_recip = _reciprocal_mask(full)
    half_recip = _reciprocal_mask(half)
    out_rows, out_cols, out_vals = [], [], []
    step = _ROWS * _scale(left.device)
    for start in range(0, num, step):
        cand = full[start : start + step]  # (b, kf): candidates, R(p, k1) where recip
        recip = full_recip[start : start + step]
        cand_half = half[cand]  # (b, kf, kh): each candidate's nearest round(k1 / 2) + 1
        cand_half_recip = half_recip[cand]  # ... and which of them are its k-reciprocal neighbours
        in_recip = ((cand_half[..., None] == cand[:, None, None, :]) & recip[:, None, None, :]).any(-1)
        overlap = (cand_half_recip & in_recip).sum(-1)  # |R(c, k1/2) & R(p, k1)|
        accept = recip & (3 * overlap > 2 * cand_half_recip.sum(-1))  # the reference's "> 2/3 * len"
        members = (
            torch.cat(
                [
                    torch.where(recip, cand, num),
                    torch.where(accept[..., None] & cand_half_recip, cand_half, num).flatten(1),
                ],
                dim=1,
            )
            .sort(dim=1)
            .values
        )  # (b, kf + kf * kh), padded with N
        valid = members != num
        valid[:, 1:] &= members[:, 1:] != members[:, :-1]  # drop repeats: the union of the sets
        members = torch.where(valid, members, num).sort(dim=1).values  # the set, ascending, then padding
        valid = members != num
        dist = _member_distances(left, right, nn, start, members, valid)  # (b, L)
        weights = torch.where(valid, torch.exp(-dist / nn.row_max[start : start + cand.shape[0], None]), 0)
        weights /= weights.sum(1, keepdim=True)
        r, m = valid.nonzero(as_tuple=True)
        out_rows.append((r + start).int())
        out_cols.append(members[r, m].int())
        out_vals.append(weights[r, m])
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)


def _member_distances(
    left: torch.Tensor, right: torch.Tensor, nn: _Neighbours, start: int, members: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Squared distances from images start.. to their ``members`` (b, L): from the kept lists, else computed."""
    kept = nn.kept_index[start : start + members.shape[0]]  # (b, m), sorted
    pos = torch.searchsorted(kept, members).clamp_(max=kept.shape[1] - 1)
    out = nn.kept_dist[start : start + members.shape[0]].gather(1, pos)
    # members far from the image, reached through a neighbour's set: compute their distances
    r, m = (valid & (kept.gather(1, pos) != members)).nonzero(as_tuple=True)
    step = max(1, _GATHER_BUDGET * _scale(left.device) // left.shape[1])
    for chunk in torch.arange(r.numel(), device=r.device).split(step):
        rows, cols = r[chunk] + start, members[r[chunk], m[chunk]]
        out[r[chunk], m[chunk]] = torch.linalg.vecdot(left[rows], right[cols]).clamp_(min=0)
    return out


def _segment_sum(values: torch.Tensor, segment: torch.Tensor, num: int) -> torch.Tensor:
    """Sum of ``values`` per segment id in 0..num-1."""
    return torch.zeros(num, dtype=values.dtype, device=values.device).index_add_(0, segment, values)


def _expand(ptr: torch.Tensor, counts: torch.Tensor, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of all entries of the CSR rows ``which`` (ptr: row starts), and the item each comes from."""
    c = counts[which]
    owner = torch.repeat_interleave(torch.arange(which.numel(), device=which.device), c)
    pos = torch.arange(owner.numel(), device=which.device) + (ptr[which] - (torch.cumsum(c, 0) - c))[owner]
    return pos, owner


def _query_expansion(
    nearest: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """V_qe[i] = mean of V over the rows ``nearest[i]`` (the k2 nearest images), as sorted COO."""
    num, k2 = nearest.shape
    counts = torch.bincount(rows, minlength=num)
    ptr = torch.cumsum(counts, 0) - counts
    work = counts[nearest].sum(1)  # (N,) entries each output row gathers
    out_rows, out_cols, out_vals = [], [], []
    for a, b in _budget_ranges(work, _PAIR_BUDGET * _scale(vals.device)):
        src = nearest[a:b].reshape(-1)  # (b * k2,)
        pos, owner = _expand(ptr, counts, src)
        key, perm = torch.sort((owner // k2 + a) * num + cols[pos], stable=True)  # by (output row, column)
        unique, inverse = torch.unique_consecutive(key, return_inverse=True)
        # V[nearest[i, t], col] in slot t, summed in the order of t like the reference's np.mean over rows
        slots = torch.zeros(unique.numel(), k2, dtype=vals.dtype, device=vals.device)
        slots[inverse, (owner % k2)[perm]] = vals[pos][perm]
        total = slots[:, 0].clone()
        for t in range(1, k2):
            total += slots[:, t]
        out_rows.append((unique // num).int())
        out_cols.append((unique % num).int())
        out_vals.append(total / k2)
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)


def _budget_ranges(work: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Split 0..len(work) into consecutive ranges whose summed ``work`` stays near ``budget`` (at least one item)."""
    ends = torch.cumsum(work, 0).tolist()
    ranges, start, total = [], 0, 0
    for i, end in enumerate(ends):
        if end - total > budget and i > start:
            ranges.append((start, i))
            start, total = i, ends[i - 1]
    if start < len(ends):
        ranges.append((start, len(ends)))
    return ranges


def _jaccard_combine(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, qg: torch.Tensor, q_max: torch.Tensor, lam: float
) -> torch.Tensor:
    """Final (Q, G) distances, in place of the squared distances ``qg``: jaccard * (1 - lam) + original * lam."""
    num_q, num_g = qg.shape
    num = num_q + num_g
    # gallery rows of V by column: the inverted index of the reference
    g_sel = rows >= num_q
    g_cols, order = torch.sort(cols[g_sel], stable=True)
    g_rows = (rows[g_sel] - num_q)[order]
    g_vals = vals[g_sel][order]
    g_counts = torch.bincount(g_cols, minlength=num)
    g_ptr = torch.cumsum(g_counts, 0) - g_counts
    # query rows of V (rows are sorted, so they come first)
    q_end = int(torch.searchsorted(rows, torch.tensor(num_q, dtype=rows.dtype, device=rows.device)))
    q_rows, q_cols, q_vals = rows[:q_end], cols[:q_end], vals[:q_end]
    q_counts = torch.bincount(q_rows, minlength=num_q)
    q_ptr = torch.cumsum(q_counts, 0) - q_counts
    q_ptr = torch.cat([q_ptr, torch.tensor([q_end], device=q_ptr.device)]).tolist()
    # per query: (query entry, gallery entry) pairs, plus its row of the dense (b, G) temporaries
    work = _segment_sum(g_counts[q_cols], q_rows, num_q) + num_g
    for a, b in _budget_ranges(work, _PAIR_BUDGET * _scale(vals.device)):
        entries = slice(q_ptr[a], q_ptr[b])  # this range's query entries (l, v): gallery entries in column l
        count = g_counts[q_cols[entries]]
        pos = torch.repeat_interleave(g_ptr[q_cols[entries]] - (torch.cumsum(count, 0) - count), count)
        pos += torch.arange(pos.numel(), device=pos.device)
        flat = torch.repeat_interleave((q_rows[entries] - a).long() * num_g, count)
        flat += g_rows[pos]  # (query in range, gallery image) of each pair
        shared = torch.repeat_interleave(q_vals[entries], count)
        torch.minimum(shared, g_vals[pos], out=shared)
        total = torch.zeros((b - a) * num_g, dtype=vals.dtype, device=vals.device).index_add_(0, flat, shared)
        total = total.view(b - a, num_g)  # sum over columns of min(V_q, V_g), in column order as the reference
        block = qg[a:b]
        block.copy_((1 - total / (2 - total)) * (1 - lam) + (block / q_max[a:b, None]) * lam)
    return qg
