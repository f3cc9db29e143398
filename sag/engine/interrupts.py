"""Signals in a run: SIGTERM stops it like Ctrl-C, neither cuts a write short, SIGUSR1 asks for a checkpoint."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
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


@contextmanager
def on_checkpoint_signal(request: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGUSR1 (e.g. SLURM's ``--signal=USR1@120`` before a time limit) calls ``request()``.

    The run goes on: the trainer writes last.pt after the current epoch. No-op where SIGUSR1 does not exist.
    """
    signum = getattr(signal, "SIGUSR1", None)
    if signum is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, lambda _s, _f: request())
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)
