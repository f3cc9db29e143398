"""Mixed precision: the autocast dtype of ``--precision`` and a GradScaler for fp16."""

from __future__ import annotations

import contextlib
import warnings

import torch

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None = plain fp32.

    fp16 autocast that this torch cannot run on ``device`` falls back to fp32 with a warning.
    """
    if precision not in _DTYPES:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(_DTYPES)}")
    dtype = _DTYPES[precision]
    if dtype is None:
        return None
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            probe = torch.nn.functional.linear(torch.ones(2, 2, device=device), torch.ones(2, 2, device=device))
        if probe.dtype != dtype:
            raise RuntimeError(f"autocast produced {probe.dtype}")
    except (RuntimeError, AssertionError) as err:
        warnings.warn(
            f"--precision {precision} is not supported on {device.type} by torch {torch.__version__} ({err}); "
            "training in fp32 instead",
            stacklevel=2,
        )
        return None
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
