"""Signals while runs are in progress, one mechanism for every executor.

    with OnSignals((signal.SIGINT, signal.SIGTERM), handle) as stop:  # handle(signum, again)
        ...
    stop.received    # the last signal received, or None

The job asks the trainer to stop at the next step boundary (in-process: SIGINT, SIGTERM, SIGUSR1; under
submitit: its checkpoint signal, passed on to submitit's own handler afterwards); the local launcher stops
its workers. Handlers can be set on the main thread only: elsewhere OnSignals leaves them as they are.
"""
from __future__ import annotations

import signal
import threading
import types
from collections.abc import Callable, Iterable


class OnSignals:
    """While entered, each of `signals` calls `handle(signum, again)` (`again`: one was received before) and
    is remembered in `received`. The handlers found on entry come back on exit, unless `restore` is False."""

    def __init__(self, signals: Iterable[int], handle: Callable[[int, bool], None], *, restore: bool = True):
        self.signals = tuple(signals)
        self.handle = handle
        self.restore = restore
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> OnSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._on_signal) for sig in self.signals}
        return self

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        again = self.received is not None
        self.received = signum
        self.handle(signum, again)

    def pass_on(self) -> None:
        """Call the handler that was in place before for the signal received (submitit's: checkpoint(),
        requeue, exit)."""
        handler = self.previous.get(self.received) if self.received is not None else None
        if callable(handler):
            handler(self.received, None)

    def __exit__(self, *exc: object) -> None:
        if self.restore:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
