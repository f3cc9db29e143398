"""Checkpoints: atomic writes, ``weights_only=True`` loads, RNG states as tensors, clear errors on a mismatch."""

from __future__ import annotations

import errno
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sag.atomic import write_bytes_atomic
from sag.engine.config import TrainConfig
from sag.engine.interrupts import deferred_signals

FORMAT_VERSION = 1  # bump when the layout changes; older sag versions refuse newer files
_REQUIRED_KEYS = ("format_version", "model", "model_spec", "config", "epoch")
_SPEC_FIELDS = ("backbone", "depths", "num_classes", "preset", "input_size")
_RESUME_KEYS = ("optimizer", "scheduler", "rng")
_WRITING_OPTIONS = ("generate_if_missing", "overwrite", "workers", "progress")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (``sag.atomic``: fsynced temp file, then ``os.replace``).

    The state is serialised in memory first, so a full disk surfaces as the OSError that names the file (not a
    torch "enforce fail"), and Ctrl-C or SIGTERM during the save take effect once the file is complete.
    """
    path = Path(path)
    with deferred_signals():
        buffer = io.BytesIO()
        torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
        try:
            write_bytes_atomic(path, buffer.getbuffer())
        except OSError as err:
            hint = "; free some space (or choose another --out), then run again" if err.errno == errno.ENOSPC else ""
            raise OSError(err.errno, f"cannot save checkpoint {path}: {err.strerror or err}{hint}") from err


def read_checkpoint(path: str | Path, for_resume: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict onto the CPU with ``weights_only=True``; errors name the file and the fix.

    ``for_resume``: also require the optimiser, scheduler and RNG states that only a ``last.pt`` holds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a best.pt or last.pt from a run dir")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): it was never written completely; use another one")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, pickle of foreign objects, not a torch file at all
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {_reason(err)}") from err
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED_KEYS):
        raise ValueError(f"{path} is not a sag checkpoint (expected keys {', '.join(_REQUIRED_KEYS)})")
    version = state["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {version}, newer than this sag reads (up to {FORMAT_VERSION}); "
            "upgrade sag (pip install -U sag-reid) to load it"
        )
    missing = [key for key in _RESUME_KEYS if key not in state] if for_resume else []
    if missing:
        raise ValueError(
            f"{path} cannot be resumed: it has no {', '.join(missing)} (a best.pt copied over last.pt?); "
            "put back the last.pt that training wrote, or start over with --overwrite"
        )
    return state


def readable_dataset_options(options: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored dataset options without those that would write (generate, overwrite)."""
    return {key: value for key, value in options.items() if key not in _WRITING_OPTIONS}


def _reason(err: Exception) -> str:
    """The informative line of a torch.load error (for weights_only refusals: which global it refused)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return "the file is cut short or not a torch file"
    if lines[0].startswith("Weights only load failed") and len(lines) > 1:
        return f"{lines[1]} (the file holds objects a checkpoint never has; do not load it unsafely)"
    return lines[0]


def model_spec(config: TrainConfig, num_classes: int) -> dict[str, Any]:
    """What ``build_model`` needs to rebuild the network of ``config`` with ``num_classes`` outputs."""
    return {
        "backbone": config.backbone,
        "depths": list(config.depths),
        "num_classes": int(num_classes),
        "preset": config.preset,
        "input_size": list(config.input_size),
    }


def check_model_spec(found: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    """Raise ValueError naming every field on which checkpoint ``path`` differs from the model asked for."""
    diffs = [
        f"{name}: checkpoint {found.get(name)!r} vs requested {expected.get(name)!r}"
        for name in _SPEC_FIELDS
        if found.get(name) != expected.get(name)
    ]
    if diffs:
        raise ValueError(
            f"checkpoint {path} holds a different model ({'; '.join(diffs)}); "
            "use the matching options or start a new run dir"
        )


def build_from_spec(spec: dict[str, Any]) -> torch.nn.Module:
    """A fresh (randomly initialised) SAGNet of the given spec."""
    from sag.models import build_model

    return build_model(
        spec["backbone"],
        num_classes=int(spec["num_classes"]),
        depths=tuple(spec["depths"]),
        preset=spec["preset"],
        input_size=tuple(spec["input_size"]),
    )


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with a one-line ValueError on a mismatch."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        first = str(err).splitlines()[1:2] or [str(err)]
        raise ValueError(f"checkpoint {path} does not fit the model: {first[0].strip()}") from err


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild the model saved in ``path`` (best.pt or last.pt) in eval mode on ``device``; returns (model, config)."""
    state = read_checkpoint(path)
    model = build_from_spec(state["model_spec"])
    load_model_state(model, state["model"], path)
    return model.to(device).eval(), TrainConfig.from_dict(state["config"])


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA when initialised) generator states, as tensors and plain numbers."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
