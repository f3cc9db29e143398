"""Input checks shared by the evaluation functions: array-likes in, validated torch tensors out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def to_tensor(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """``x`` (tensor, numpy array or sequence) as a tensor on ``device`` (default: where it already is)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    return t if device is None else t.to(device)


def float_matrix(x: Any, name: str, device: torch.device | None = None, rows: str = "") -> torch.Tensor:
    """A 2-D floating tensor with at least one row and column, else ValueError naming ``name`` and ``rows``' set."""
    t = to_tensor(x, name, device)
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must hold floating-point values, got dtype {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        empty = f": the {rows} set is empty" if rows else ""
        raise ValueError(f"{name} has no rows (shape {tuple(t.shape)}){empty}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has no columns (shape {tuple(t.shape)})")
    return t


def labels(
    x: Any, name: str, device: torch.device | None = None, length: int | None = None, against: str = ""
) -> torch.Tensor:
    """A 1-D int64 tensor of person or camera ids (``length`` of them, one per ``against``), else ValueError."""
    t = to_tensor(x, name)
    if t.dtype not in _INT_DTYPES:
        raise ValueError(f"{name} must hold integers (person or camera ids), got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if length is not None and t.shape[0] != length:
        raise ValueError(f"{name} has {t.shape[0]} entries, expected {length} (one per {against})")
    return t.to(device=device, dtype=torch.int64)


def check_finite(x: torch.Tensor, name: str, row_offset: int = 0) -> None:
    """ValueError naming ``name`` and the first bad position when ``x`` holds NaN or +-inf."""
    if bool(torch.isfinite(x.sum())):  # one cheap reduction; NaN and inf propagate into the sum
        return
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):  # the sum overflowed: every entry is finite
        return
    where = [int(i) for i in bad.nonzero()[0]]
    where[0] += row_offset
    kind = "NaN" if bool(torch.isnan(x).any()) else "an infinite value (an overflow)"
    raise ValueError(f"{name} holds {kind} (first at index {tuple(where)}); remove or fix those entries")


def choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    """``value`` if it is one of ``options``, else ValueError listing them."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(map(repr, options))}")
    return value


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)
