"""Small tensor helpers shared by the evaluation modules."""

from __future__ import annotations

import torch

_INT64_MAGNITUDE = (1 << 63) - 1


def exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """[0, x0, x0 + x1, ...] without the total: start offsets of consecutive segments of sizes ``x``."""
    return torch.cumsum(x, 0) - x


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Ascending indices of the True entries of a flat bool ``mask`` whose length is a multiple of 8.

    Scans 8 bytes at a time first, so a sparse mask costs about an eighth of ``mask.nonzero()``.
    """
    words = (mask.view(torch.int64) != 0).nonzero().squeeze(1)  # 8-byte words holding a True
    word, byte = mask.view(-1, 8)[words].nonzero(as_tuple=True)
    return words[word] * 8 + byte


def padded_mask(buffer: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A (rows, cols) bool view at the start of ``buffer`` and the flat view padded with False to a multiple of 8."""
    numel = shape[0] * shape[1]
    flat = buffer[: -(-numel // 8) * 8]
    flat[numel:] = False
    return flat[:numel].view(shape), flat


def lexsort_rows(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by (row, value), ties kept in input order; exact on float32 / float64 values."""
    # Order-preserving integer keys: flip the magnitude bits of negative floats; + 0.0 maps -0.0 to +0.0.
    if values.dtype == torch.float64:
        bits = (values + 0.0).view(torch.int64)
        perm = torch.sort(torch.where(bits < 0, bits ^ _INT64_MAGNITUDE, bits), stable=True).indices
        return perm[torch.sort(rows[perm], stable=True).indices]
    bits = (values.float() + 0.0).view(torch.int32)
    key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long() + (1 << 31)  # in [0, 2**32)
    return torch.sort((rows.long() << 32) | key, stable=True).indices


def monotone_bins(values: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, top: int) -> torch.Tensor:
    """int32 bins ``clamp((values - shift) * scale, 0, top)`` truncated: a non-decreasing function of ``values``.

    Each step is one correctly rounded IEEE operation, so equal inputs give equal bins on any device and in any
    layout; bins can therefore order two values exactly when they differ (a smaller bin means a smaller value).
    """
    z = torch.sub(values, shift)
    z.mul_(scale).clamp_(0, top)
    return z.to(torch.int32)


def count_preceding(
    keys: torch.Tensor,
    cols: torch.Tensor,
    start: torch.Tensor,
    stop: torch.Tensor,
    value: torch.Tensor,
    col: torch.Tensor,
) -> torch.Tensor:
    """For each (value, col), the number of sorted pairs ``(keys, cols)[start:stop]`` ordered before it.

    ``keys`` ascending, ties by ascending ``cols``, within each range; a pair precedes (value, col) when its key is
    smaller, or equal with a smaller column. A vectorised binary search: log2 of the longest range steps.
    """
    lo, hi = start.clone(), stop.clone()
    last = max(0, keys.numel() - 1)
    for _ in range(int((stop - start).max()).bit_length() if start.numel() else 0):
        mid = (lo + hi) // 2
        probe = mid.clamp(max=last)
        key = keys[probe]
        before = (key < value) | ((key == value) & (cols[probe] < col))
        active = lo < hi
        lo = torch.where(active & before, mid + 1, lo)
        hi = torch.where(active & ~before, mid, hi)
    return lo - start
