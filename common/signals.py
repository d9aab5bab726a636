"""SIGTERM/SIGINT as a stop request, shared by the worker, the alarm service and the producer."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignals:
    """While entered, SIGTERM and SIGINT set `stop` (a second one raises KeyboardInterrupt,
    for an operator who does not want to wait for a clean stop). The previous handlers
    come back on exit. Outside the main thread, where Python cannot install handlers,
    it does nothing.
    """

    def __init__(self, stop: threading.Event, what: str):
        self.stop = stop
        self.what = what  # "stopping after the frames already polled", for the log line
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: %s", signal.Signals(number).name, self.what)
        self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
