"""SIGINT / SIGTERM during training: finish the step, save a checkpoint, exit with one line.

Clusters send SIGTERM some seconds before SIGKILL, and Ctrl-C is how a user
stops a run. Inside the training loop either signal only sets a flag; the
loop checks it at the next step boundary, saves, and raises ``Interrupted``.
A second signal stops at once (``SignalInterrupt``), without saving.
"""

from __future__ import annotations

import signal
import threading

from distill.errors import SignalInterrupt

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: ``.requested`` is the first signal received (None if none)."""

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise SignalInterrupt(signum)
        self.requested = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
