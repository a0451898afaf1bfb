"""Graceful stop on SIGINT / SIGTERM: the first signal stops the sweep cleanly, a second exits at once.

On the first signal Ray Tune stops every running trial and the runner records them (FAIL,
reason ``interrupted``, parameters queued again) before it returns; on the second a
``KeyboardInterrupt`` leaves immediately, and the next run reconciles what was left open.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ray.tune import Stopper

# Tune's own SIGINT handler would swallow the signal without telling us; ours replaces it.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop(Stopper):
    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.signal_name is not None

    def _handle(self, number: int, frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """Route SIGINT and SIGTERM to this stopper while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.getsignal(number) for number in _SIGNALS}
        for number in _SIGNALS:
            signal.signal(number, self._handle)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
