"""CMC, mAP and mINP of a query x gallery distance matrix under the Market-1501 protocol, exact and vectorised."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sag.evaluation import _checks
from sag.evaluation._ops import (
    count_preceding,
    exclusive_cumsum,
    flat_nonzero,
    lexsort_rows,
    monotone_bins,
    padded_mask,
)
from sag.evaluation.protocol import AVERAGES

AP_RULES = ("standard", "trapezoid")  # = sag.evaluation.protocol.AP_RULES
JUNK_PID = -1  # gallery images of this id are junk for every query (Market-1501)
_CHUNK_ELEMENTS = 1 << 22  # distance entries ranked at once: bounds the memory used beyond the matrix
_DENSE_FRACTION = 0.25  # bin a whole block when more of its entries than this lie below the farthest good one


def evaluate_ranking(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    ap: str = "standard",
    average: str = "valid",
) -> dict[str, Any]:
    """CMC, mAP and mINP of ranking the gallery by ``distmat`` (Q, G), smaller = more similar.

    Protocol (Market-1501, DukeMTMC-reID, CUHK03-NP): for a query, gallery images with the same person id and a
    different camera are *good*; those with the same id and the same camera, and every gallery image of id -1,
    are *junk* and removed from its ranking; everything else (distractors of id 0 included) is a wrong match.
    Queries without any good image are counted in ``num_skipped_queries``; ``average="valid"`` leaves them out of
    every mean, ``average="all"`` (the official ``evaluation.m`` and the released code) divides by all queries, so
    each of them counts 0 in CMC, mAP and mINP. Ties are broken stably
    by gallery index: of two gallery images at the same distance, the one with the smaller index ranks first.

    ``ap="standard"`` is non-interpolated AP, the mean over good images of the precision at their rank
    (torchreid, fast-reid). ``ap="trapezoid"`` is the official Market-1501 MATLAB rule (``compute_AP.m``): the
    k-th good image at rank r adds ``(p_before + k / r) / 2 / n_good`` with ``p_before = (k - 1) / (r - 1)``, the
    precision at the rank before (1 when r = 1). mINP is the mean over queries of ``n_good / rank of the last
    good image`` (Ye et al. 2021).

    Distances may be +-inf (+inf: never retrieved before a finite distance); NaN raises ValueError. Inputs may
    be numpy arrays or torch tensors; the work runs on ``distmat``'s device, in chunks of queries so that the
    memory beyond the matrix stays bounded. Nothing is sorted but each query's few good images: a good image's
    rank is the number of kept gallery images before it, counted from per-row distance bins (see
    ``RankingAccumulator._others_before``), so the cost is a few passes over the matrix whatever the model (good
    matches near the top or anywhere), and exact: the same ranks as a stable sort of every row.

    Returns ``cmc`` (numpy, ``cmc[k-1]`` = rank-k accuracy), ``mAP``, ``mINP``, ``rank1`` / ``rank5`` /
    ``rank10`` (those <= ``max_rank``), ``AP`` (per query, NaN when skipped), ``num_valid_queries`` and
    ``num_skipped_queries``; accuracies are fractions in [0, 1].
    """
    dist = _checks.float_matrix(distmat, "distmat", rows="query")
    num_q, num_g = dist.shape
    g_pids = _checks.labels(g_pids, "g_pids", dist.device, num_g, "distmat column")
    g_camids = _checks.labels(g_camids, "g_camids", dist.device, num_g, "distmat column")
    accumulator = RankingAccumulator(g_pids, g_camids, max_rank=max_rank, ap=ap, device=dist.device, average=average)
    q_pids = _checks.labels(q_pids, "q_pids", dist.device, num_q, "distmat row")
    q_camids = _checks.labels(q_camids, "q_camids", dist.device, num_q, "distmat row")
    rows = accumulator.block_rows  # each block is checked again by add(): cheap, the labels are already tensors
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        accumulator.add(dist[start:stop], q_pids[start:stop], q_camids[start:stop])
    return accumulator.result()


class RankingAccumulator:
    """Ranks chunks of queries against one gallery and accumulates CMC / AP / INP; ``result()`` averages them.

    ``evaluate_ranking`` feeds it row blocks of a full matrix; a caller may instead feed blocks of distances it
    computes on the fly (e.g. queries x a gallery too large for one matrix).
    """

    def __init__(
        self,
        g_pids: Any,
        g_camids: Any,
        max_rank: int = 50,
        ap: str = "standard",
        device: torch.device | str | None = None,
        average: str = "valid",
    ) -> None:
        self.max_rank = _checks.positive_int(max_rank, "max_rank")
        self.ap = _checks.choice(ap, "ap", AP_RULES)
        self.average = _checks.choice(average, "average", AVERAGES)
        device = torch.device("cpu") if device is None else torch.device(device)
        self._g_pids = _checks.labels(g_pids, "g_pids", device)
        self.num_gallery = int(self._g_pids.shape[0])
        self.block_rows = max(1, _CHUNK_ELEMENTS // max(1, self.num_gallery))  # queries per block: bounded memory
        self._g_camids = _checks.labels(g_camids, "g_camids", device, self.num_gallery, "entry of g_pids")
        # gallery indices grouped by person id, ascending index within an id (stable sort)
        self._sorted_pids, self._by_pid = torch.sort(self._g_pids, stable=True)
        junk = (self._g_pids == JUNK_PID).nonzero().squeeze(1)
        self._junk_cols = junk if junk.numel() else None
        self._hist = torch.zeros(self.max_rank + 1, dtype=torch.int64, device=device)  # first-hit ranks, capped
        self._ap: list[torch.Tensor] = []
        self._inp_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._num_queries = 0
        self._masks = [torch.zeros(0, dtype=torch.bool, device=device) for _ in range(2)]  # reused, grown on demand

    def add(self, dist: Any, q_pids: Any, q_camids: Any) -> None:
        """Rank the gallery for a block of queries: distances ``dist`` (B, G), ``q_pids`` and ``q_camids`` (B,)."""
        dist = _checks.float_matrix(dist, "distmat", self._g_pids.device, rows="query")
        num_b, num_g = dist.shape
        if num_g != self.num_gallery:
            raise ValueError(f"distmat has {num_g} columns, expected {self.num_gallery} (one per gallery image)")
        q_pids = _checks.labels(q_pids, "q_pids", dist.device, num_b, "distmat row")
        q_camids = _checks.labels(q_camids, "q_camids", dist.device, num_b, "distmat row")
        for start in range(0, num_b, self.block_rows):  # bounded memory (and int32 bin indices) per block
            stop = min(start + self.block_rows, num_b)
            self._add_block(dist[start:stop], q_pids[start:stop], q_camids[start:stop])

    def _add_block(self, dist: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor) -> None:
        """``add`` for at most ``block_rows`` queries."""
        dist = dist.contiguous() if dist.dtype in (torch.float32, torch.float64) else dist.float().contiguous()
        num_b, num_g = dist.shape
        dev = dist.device
        flat = dist.view(-1)

        # gallery images sharing the query's id: good (other camera) or junk (same camera); (row, col) pairs
        lo = torch.searchsorted(self._sorted_pids, q_pids)
        count = torch.searchsorted(self._sorted_pids, q_pids, right=True) - lo
        rows = torch.repeat_interleave(torch.arange(num_b, device=dev), count)
        offsets = torch.repeat_interleave(lo - exclusive_cumsum(count), count)
        cols = self._by_pid[torch.arange(rows.numel(), device=dev) + offsets]
        same_cam = self._g_camids[cols] == q_camids[rows]
        good = ~same_cam & (q_pids[rows] != JUNK_PID)  # id -1 is junk everywhere, even for a query of id -1
        junk_rows, junk_flat = rows[same_cam], rows[same_cam] * num_g + cols[same_cam]
        good_rows, good_cols = rows[good], cols[good]
        good_flat = good_rows * num_g + good_cols
        good_vals = flat[good_flat]
        nan = torch.isnan(good_vals).any() | torch.isnan(flat[junk_flat]).any()  # never extracted below
        if self._junk_cols is not None:
            nan |= torch.isnan(dist[:, self._junk_cols]).any()
        if bool(nan):
            self._raise_nan(dist)

        # only images up to the farthest good one can rank before a good one: what fraction of the block is that?
        farthest = torch.full((num_b,), -torch.inf, dtype=dist.dtype, device=dev)
        farthest.scatter_reduce_(0, good_rows, good_vals, "amax")  # (B,) -inf for rows without a good image
        near = float((dist[:, :: max(1, num_g // 64)] <= farthest[:, None]).float().mean())  # on a sample of columns

        # the good images of each row sorted by (distance, gallery index): the k-th of row r at starts[r] + k
        num_good = torch.bincount(good_rows, minlength=num_b)
        order = lexsort_rows(good_rows, good_vals)  # by row, distance, then gallery index (ascending within a row)
        bins = max(16, min(1 << 16, int(near * num_g) // 8))  # about 8 candidate images per bin and row
        goods = _Goods(good_rows[order], good_vals[order], good_cols[order], num_good, bins)
        k0 = goods.index  # 0-based index of each good image within its row
        dense = near > _DENSE_FRACTION  # bin the whole block, or extract the entries up to the farthest good image
        rank0 = k0 + self._others_before(dist, goods, farthest, dense, (junk_rows, junk_flat, good_flat))

        rank = rank0.double() + 1.0
        k = k0.double() + 1.0
        if self.ap == "standard":
            gain = k / rank
        else:  # trapezoid between the precision at the rank before (1 at rank 1) and the precision at this rank
            before = torch.where(rank0 > 0, (k - 1.0) / (rank - 1.0).clamp(min=1.0), torch.ones_like(rank))
            gain = (before + k / rank) / 2.0
        hit_rows = goods.rows
        ap_sum = torch.zeros(num_b, dtype=torch.float64, device=dev).index_add_(0, hit_rows, gain)
        self._ap.append(ap_sum / num_good)  # NaN (0 / 0) for skipped queries
        first = k0 == 0
        self._hist += torch.bincount(rank0[first].clamp(max=self.max_rank), minlength=self.max_rank + 1)
        last = k0 == num_good[hit_rows] - 1
        self._inp_sum += (num_good[hit_rows[last]] / rank[last]).sum()
        self._num_queries += num_b

    def _others_before(
        self,
        dist: torch.Tensor,
        goods: _Goods,
        farthest: torch.Tensor,
        dense: bool,
        excluded: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """For each sorted good image, how many kept (not junk) other gallery images rank before it.

        Each other image falls in a per-row distance bin (``_Goods``). Those in lower bins than a good image's
        rank before it; those in higher bins after it; only those sharing a bin with a good image (a few per good
        image) need comparing, by a binary search for ``p`` = the number of goods before them. The others before
        the k-th good are then: the images in lower bins, plus the shared-bin images with ``p <= k`` (which counts
        the shared-bin images of lower bins too), minus the latter.
        """
        if goods.rows.numel() == 0:
            return goods.rows  # no good image in the block
        junk_rows, junk_flat, good_flat = excluded  # same-id same-camera entries (rows, flat), good entries (flat)
        num_b, num_g = dist.shape
        dev = dist.device
        flat = dist.view(-1)
        width = goods.bins_per_row
        row_base = torch.arange(num_b, device=dev, dtype=torch.int32) * width  # (B,) first bin of each row
        sentinel = row_base + (width - 1)  # (B,) a bin after every good one, for junk and good entries
        if dense:  # most entries may precede a good one: bin the whole block
            if bool(torch.isnan(dist.sum())) and bool(torch.isnan(dist).any()):  # NaN or inf - inf in the sum
                self._raise_nan(dist)
            bins = monotone_bins(dist, goods.shift[:, None], goods.scale[:, None], goods.top)  # (B, G)
            bins += row_base[:, None]
            bins.view(-1)[junk_flat] = sentinel[junk_rows]
            bins.view(-1)[good_flat] = sentinel[goods.rows]
            if self._junk_cols is not None:
                bins[:, self._junk_cols] = sentinel[:, None]
            bins, positions = bins.view(-1), None
        else:  # only entries up to the farthest good image can precede one: extract just those
            keep, keep_flat = padded_mask(self._buffer(dist.numel()), dist.shape)
            # not (d > farthest): d <= farthest, and NaN, which is then caught with the extracted values
            torch.gt(dist, farthest[:, None], out=keep).logical_not_()
            keep.view(-1)[junk_flat] = False
            keep.view(-1)[good_flat] = False
            if self._junk_cols is not None:
                keep[:, self._junk_cols] = False
            positions = flat_nonzero(keep_flat)  # (E,) ascending flat indices
            values = flat[positions]
            if bool(torch.isnan(values).any()):
                self._raise_nan(dist)
            rows = (positions // num_g).int()
            bins = monotone_bins(values, goods.shift[rows], goods.scale[rows], goods.top) + row_base[rows]
        per_bin = torch.bincount(bins, minlength=num_b * width)  # (B * width,) other images per (row, bin)
        in_lower = per_bin.view(num_b, width).cumsum(1).view(-1)[goods.bins] - per_bin[goods.bins]  # (N,) lower bins

        # images sharing a bin with a good image: p by a binary search among the goods of that bin
        shared, shared_flat = padded_mask(self._buffer(bins.numel(), 1), (1, bins.numel()))
        torch.index_select(goods.occupied, 0, bins, out=shared.view(-1))
        ambiguous = flat_nonzero(shared_flat)
        where = ambiguous if positions is None else positions[ambiguous]
        a_rows, a_cols, a_bins = where // num_g, where % num_g, bins[ambiguous].long()
        first = torch.searchsorted(goods.bins, a_bins)  # the goods of that bin: first..stop in sorted order
        stop = torch.searchsorted(goods.bins, a_bins, right=True)
        p = first - goods.starts[a_rows] + count_preceding(goods.vals, goods.cols, first, stop, flat[where], a_cols)
        n_max = int(goods.num_good.max())
        hist = torch.zeros(num_b * (n_max + 1), dtype=torch.int64, device=dev)
        hist.index_add_(0, a_rows * (n_max + 1) + p, torch.ones_like(p))
        p_at_most = hist.view(num_b, n_max + 1).cumsum(1)[goods.rows, goods.index]  # (N,) shared-bin images, p <= k
        a_sorted = torch.sort(a_bins).values
        shared_lower = torch.searchsorted(a_sorted, goods.bins) - torch.searchsorted(a_sorted, row_base[goods.rows])
        return in_lower + p_at_most - shared_lower

    def _buffer(self, numel: int, which: int = 0) -> torch.Tensor:
        """A reused bool buffer of at least ``numel`` entries, padded to a multiple of 8 (grown on demand)."""
        size = -(-numel // 8) * 8
        if self._masks[which].numel() < size:
            self._masks[which] = torch.zeros(size, dtype=torch.bool, device=self._g_pids.device)
        return self._masks[which]

    def _raise_nan(self, dist: torch.Tensor) -> None:
        """ValueError naming the first NaN of the block ``dist``."""
        row, col = (int(i) for i in torch.isnan(dist).nonzero()[0])
        raise ValueError(
            f"distmat holds NaN (first at index ({row + self._num_queries}, {col})); a distance must be a number "
            "(+-inf are allowed)"
        )

    def result(self) -> dict[str, Any]:
        """The averaged metrics over every query added so far (see ``evaluate_ranking``)."""
        if self._num_queries == 0:
            raise ValueError("no queries were ranked: the query set is empty")
        ap = torch.cat(self._ap).cpu().numpy()
        valid = int(np.count_nonzero(~np.isnan(ap)))
        if valid == 0:
            raise ValueError(
                f"none of the {self._num_queries} queries has a valid match (a gallery image with the same person "
                "id from another camera): check q_pids / g_pids and the camera ids"
            )
        over = valid if self.average == "valid" else self._num_queries  # "all": a no-match query counts 0
        cmc = (torch.cumsum(self._hist[: self.max_rank], 0).double() / over).cpu().numpy()
        out: dict[str, Any] = {"cmc": cmc}
        for k in (1, 5, 10):
            if k <= self.max_rank:
                out[f"rank{k}"] = float(cmc[k - 1])
        out.update(
            mAP=float(np.nansum(ap)) / over,
            mINP=float(self._inp_sum) / over,
            AP=ap,
            num_valid_queries=valid,
            num_skipped_queries=self._num_queries - valid,
        )
        return out


class _Goods:
    """The good images of a block sorted by (row, distance, gallery index), and per-row distance bins around them.

    Bins are ``monotone_bins(d, shift, scale, top)`` per row, spanning the row's finite good distances in
    ``bins`` steps with two spare bins each side, so that images clearly nearer (or farther) than every good one
    share no bin with any; bin b of row r is ``r * bins_per_row + b``. ``bins`` (N,) holds the goods' bins, in
    ascending order; ``occupied`` (B * bins_per_row,) marks the bins holding a good image.
    """

    def __init__(self, rows: torch.Tensor, vals: torch.Tensor, cols: torch.Tensor, num_good: torch.Tensor, bins: int):
        self.rows, self.vals, self.cols, self.num_good = rows, vals, cols, num_good  # (N,) x 3, (B,)
        num_b, dev = num_good.shape[0], vals.device
        self.starts = exclusive_cumsum(num_good)  # (B,)
        self.index = torch.arange(rows.numel(), device=dev) - self.starts[rows]  # (N,) k: 0-based within its row
        self.top = bins + 4  # bins 0..top; the nearest good lands near 2, the farthest near bins + 2
        self.bins_per_row = bins + 6  # one more: a sentinel bin after every good one
        finite = torch.isfinite(vals)
        inf = torch.full((num_b,), torch.inf, dtype=vals.dtype, device=dev)
        lo = inf.clone().scatter_reduce_(0, rows[finite], vals[finite], "amin")
        hi = (-inf).scatter_reduce_(0, rows[finite], vals[finite], "amax")
        lo, hi = torch.where(lo > hi, 0.0, lo), torch.where(lo > hi, 0.0, hi)  # rows without a finite good: 0
        span = hi - lo
        scale = bins / span
        shift = lo - 2 * span / bins
        usable = torch.isfinite(scale) & (scale > 0) & torch.isfinite(shift)  # else a unit scale: still monotone
        self.scale = torch.where(usable, scale, 1.0)  # (B,)
        self.shift = torch.where(usable, shift, lo - 2.0)  # (B,) finite, so that d - shift is never NaN
        width = self.bins_per_row
        self.bins = monotone_bins(vals, self.shift[rows], self.scale[rows], self.top).long() + rows * width  # (N,)
        self.occupied = torch.zeros(num_b * width, dtype=torch.bool, device=dev)
        self.occupied[self.bins] = True
