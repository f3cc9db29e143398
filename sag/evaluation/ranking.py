"""CMC, mAP and mINP of a query x gallery distance matrix under the Market-1501 protocol, exact and vectorised."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sag.evaluation import _checks
from sag.evaluation._ops import exclusive_cumsum, flat_nonzero, lexsort_rows
from sag.evaluation.protocol import AVERAGES

AP_RULES = ("standard", "trapezoid")  # = sag.evaluation.protocol.AP_RULES
JUNK_PID = -1  # gallery images of this id are junk for every query (Market-1501)
_CHUNK_ELEMENTS = 1 << 20  # distance entries ranked at once: bounds the memory used beyond the matrix


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
    memory beyond the matrix stays bounded. Rows are never fully sorted: only the gallery images up to a query's
    farthest good image are extracted and sorted, so a good model (good matches near the top) costs little more
    than one pass over the matrix, and a random one about a sort of every row.

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
        self._keep = torch.empty(0, dtype=torch.bool, device=device)  # reused (B, G) masks, grown on demand
        self._is_good = torch.zeros(0, dtype=torch.bool, device=device)  # all False between calls

    def add(self, dist: Any, q_pids: Any, q_camids: Any) -> None:
        """Rank the gallery for a block of queries: distances ``dist`` (B, G), ``q_pids`` and ``q_camids`` (B,)."""
        dist = _checks.float_matrix(dist, "distmat", self._g_pids.device, rows="query")
        num_b, num_g = dist.shape
        if num_g != self.num_gallery:
            raise ValueError(f"distmat has {num_g} columns, expected {self.num_gallery} (one per gallery image)")
        q_pids = _checks.labels(q_pids, "q_pids", dist.device, num_b, "distmat row")
        q_camids = _checks.labels(q_camids, "q_camids", dist.device, num_b, "distmat row")
        dist = dist.contiguous() if dist.dtype in (torch.float32, torch.float64) else dist.float().contiguous()
        dev = dist.device
        arange_b = torch.arange(num_b, device=dev)

        # gallery images sharing the query's id: good (other camera) or junk (same camera); (row, col) pairs
        lo = torch.searchsorted(self._sorted_pids, q_pids)
        count = torch.searchsorted(self._sorted_pids, q_pids, right=True) - lo
        rows = torch.repeat_interleave(arange_b, count)
        offsets = torch.repeat_interleave(lo - exclusive_cumsum(count), count)
        cols = self._by_pid[torch.arange(rows.numel(), device=dev) + offsets]
        same_cam = self._g_camids[cols] == q_camids[rows]
        good = ~same_cam & (q_pids[rows] != JUNK_PID)  # id -1 is junk everywhere, even for a query of id -1
        good_rows, good_cols = rows[good], cols[good]
        num_good = torch.bincount(good_rows, minlength=num_b)

        # only gallery images up to the farthest good one can precede a good one: extract and rank just those
        farthest = torch.full((num_b,), -torch.inf, dtype=dist.dtype, device=dev)
        farthest.scatter_reduce_(0, good_rows, dist.view(-1)[good_rows * num_g + good_cols], "amax")
        size = -(-dist.numel() // 8) * 8  # the masks are scanned 8 bytes at a time
        if self._keep.numel() < size:
            self._keep = torch.zeros(size, dtype=torch.bool, device=dev)
            self._is_good = torch.zeros(size, dtype=torch.bool, device=dev)
        keep_flat, is_good = self._keep[:size], self._is_good[: dist.numel()]
        keep_flat[dist.numel() :] = False
        # not (d > farthest): d <= farthest, and NaN, which is then caught below with the extracted values
        keep = torch.gt(dist, farthest[:, None], out=keep_flat[: dist.numel()].view(dist.shape))  # (B, G)
        keep.logical_not_()
        junk_flat = rows[same_cam] * num_g + cols[same_cam]
        keep.view(-1)[junk_flat] = False
        nan = torch.isnan(dist.view(-1)[junk_flat]).any()  # junk entries are not extracted: check them here
        if self._junk_cols is not None:
            keep[:, self._junk_cols] = False
            nan |= torch.isnan(dist[:, self._junk_cols]).any()
        good_flat = good_rows * num_g + good_cols
        is_good[good_flat] = True
        kept = flat_nonzero(keep_flat)  # ascending: row-major, ascending gallery index within a row
        kept_rows = kept // num_g
        values = dist.view(-1)[kept]
        if bool(nan | torch.isnan(values).any()):
            self._raise_nan(dist)
        order = lexsort_rows(kept_rows, values)  # by row, distance, then gallery index
        sorted_rows = kept_rows[order]
        hits = is_good[kept][order].nonzero().squeeze(1)
        is_good[good_flat] = False  # ready for the next block
        hit_rows = sorted_rows[hits]
        rank0 = hits - exclusive_cumsum(torch.bincount(kept_rows, minlength=num_b))[hit_rows]  # 0-based rank
        k0 = torch.arange(hits.numel(), device=dev) - exclusive_cumsum(num_good)[hit_rows]  # 0-based good index

        rank = rank0.double() + 1.0
        k = k0.double() + 1.0
        if self.ap == "standard":
            gain = k / rank
        else:  # trapezoid between the precision at the rank before (1 at rank 1) and the precision at this rank
            before = torch.where(rank0 > 0, (k - 1.0) / (rank - 1.0).clamp(min=1.0), torch.ones_like(rank))
            gain = (before + k / rank) / 2.0
        ap_sum = torch.zeros(num_b, dtype=torch.float64, device=dev).index_add_(0, hit_rows, gain)
        self._ap.append(ap_sum / num_good)  # NaN (0 / 0) for skipped queries
        first = k0 == 0
        self._hist += torch.bincount(rank0[first].clamp(max=self.max_rank), minlength=self.max_rank + 1)
        last = k0 == num_good[hit_rows] - 1
        self._inp_sum += (num_good[hit_rows[last]] / rank[last]).sum()
        self._num_queries += num_b

    def _raise_nan(self, dist: torch.Tensor) -> None:
        """ValueError naming the first NaN of the block ``dist``."""
        self._is_good.zero_()
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
