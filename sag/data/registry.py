"""One entry point for every dataset: ``load_dataset(name, root, **options)``."""

from __future__ import annotations

import os
from typing import Any

from sag.data.cuhk03 import load_cuhk03
from sag.data.market import load_dukemtmc, load_market1501
from sag.data.records import ReIDDataset
from sag.data.synthetic import load_synthetic

DATASETS = ("market1501", "dukemtmc", "cuhk03", "synthetic")
_OPTIONS = {
    "market1501": (),
    "dukemtmc": (),
    "cuhk03": ("subset", "protocol", "split"),
    "synthetic": None,  # generate_if_missing and make_synthetic's options, checked there
}


def load_dataset(name: str, root: str | os.PathLike, **options: Any) -> ReIDDataset:
    """Load dataset ``name`` (one of ``DATASETS``) from ``root``.

    Options: cuhk03 takes ``subset`` ("detected" | "labeled"), ``protocol`` ("classic" | "new") and ``split``
    (0..19, classic); synthetic takes ``generate_if_missing`` and the options of :func:`sag.data.make_synthetic`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    allowed = _OPTIONS[name]
    if allowed is not None and set(options) - set(allowed):
        bad = ", ".join(sorted(set(options) - set(allowed)))
        raise ValueError(f"{name} does not take option(s) {bad}; valid options: {', '.join(allowed) or 'none'}")
    if name == "market1501":
        return load_market1501(root)
    if name == "dukemtmc":
        return load_dukemtmc(root)
    if name == "cuhk03":
        return load_cuhk03(root, **options)
    return load_synthetic(root, **options)
