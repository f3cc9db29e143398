"""Ctrl-C and SIGTERM: SIGTERM stops a run like Ctrl-C, and neither cuts a file write short."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal other than Ctrl-C (SIGTERM: a preempted or cancelled job)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises ``Interrupted`` (a KeyboardInterrupt) in the main thread, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends (a file being written is finished), then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda s, _f: caught.append(s)) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])  # now the usual handler acts (KeyboardInterrupt, Interrupted, exit)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)
