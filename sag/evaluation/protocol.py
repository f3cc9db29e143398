"""The test protocol as settings: flip averaging, the AP rule and how metrics are averaged over queries (torch-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

AP_RULES = ("standard", "trapezoid")  # non-interpolated AP (torchreid) | the official Market-1501 rule
AVERAGES = ("valid", "all")  # over queries with a good match | over every query, a no-match query counting 0
LEGACY = {"flip": False, "ap": "standard", "average": "valid"}  # what runs recorded before the protocol was a setting


@dataclass(frozen=True)
class Protocol:
    """How test features are made and scored: ``flip`` (mean with the mirror image, then L2), ``ap``, ``average``."""

    flip: bool
    ap: str
    average: str

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")
        if self.ap not in AP_RULES:
            raise ValueError(f"unknown AP rule {self.ap!r}; valid: {', '.join(AP_RULES)}")
        if self.average not in AVERAGES:
            raise ValueError(f"unknown averaging {self.average!r}; valid: {', '.join(AVERAGES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for config.json and every results file."""
        return asdict(self)

    def describe(self) -> str:
        """One line for printed tables, e.g. ``flip on, trapezoid AP, averaged over all queries``."""
        over = "all queries" if self.average == "all" else "queries with a match"
        return f"flip {'on' if self.flip else 'off'}, {self.ap} AP, averaged over {over}"


PROTOCOLS: dict[str, Protocol] = {
    # the paper reports Market-1501's official protocol (trapezoid AP over all queries) and never mentions flipping
    "paper": Protocol(flip=False, ap="trapezoid", average="all"),
    # the released test.py: flip-sum then L2 features, the official trapezoid AP, averaged over ALL queries
    "released_code": Protocol(flip=True, ap="trapezoid", average="all"),
}


def get_protocol(
    preset: str | None = "paper", flip: bool | None = None, ap: str | None = None, average: str | None = None
) -> Protocol:
    """The preset's protocol with any setting given (not None) replacing the preset's; ValueError on a bad value."""
    preset = "paper" if preset is None else preset
    if preset not in PROTOCOLS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PROTOCOLS)}")
    given = {k: v for k, v in {"flip": flip, "ap": ap, "average": average}.items() if v is not None}
    return replace(PROTOCOLS[preset], **given)


def describe_record(record: dict[str, Any] | None) -> str:
    """``Protocol.describe`` of a recorded protocol dict (a record without one: the settings used before)."""
    return Protocol(**(LEGACY | dict(record or {}))).describe()
