"""Drift-free rate control for the producer.

Frame n is due at `start + n / fps`, computed from the start every time rather than by
adding a period to the previous wake-up, so sleep overshoot and per-frame work never
accumulate into drift. A producer that falls behind (a slow source, a blocked send)
catches up by sending without sleeping, but never more than `max_burst_s` worth of
frames: beyond that the schedule is re-anchored at "now" instead of bursting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        fps: float,
        *,
        max_burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
    ):
        if fps < 0:
            raise ValueError(f"fps must be >= 0 (0 = as fast as possible), got {fps}")
        self.fps = float(fps)
        self.period = 1.0 / self.fps if self.fps > 0 else 0.0
        self.max_burst_s = max_burst_s
        self._clock = clock
        self._stop = stop
        # Waiting on the stop event lets Ctrl-C/SIGTERM interrupt a long period at once.
        self._sleep = sleep or (stop.wait if stop is not None else time.sleep)
        self._start: float | None = None
        self._n = 0  # frames scheduled since the anchor
        self.resets = 0  # how often the schedule was re-anchored after falling behind

    def wait(self) -> bool:
        """Block until the next frame is due. Returns False when the stop event was set."""
        if self._stop is not None and self._stop.is_set():
            return False
        if self.period == 0.0:
            return True
        now = self._clock()
        if self._start is None:
            self._start, self._n = now, 0
        due = self._start + self._n * self.period
        if now - due > self.max_burst_s:
            # Far behind: drop the backlog rather than bursting, and start a new schedule.
            self._start, self._n, due = now, 0, now
            self.resets += 1
        delay = due - now
        if delay > 0:
            self._sleep(delay)
        self._n += 1
        return not (self._stop is not None and self._stop.is_set())

    def ready(self) -> bool:
        """Non-blocking variant for live sources: True (and the slot is used) when the next frame
        is due, False when it is too early, so the caller drops this frame instead of queueing it."""
        if self.period == 0.0:
            return True
        now = self._clock()
        if self._start is None:
            self._start, self._n = now, 0
        due = self._start + self._n * self.period
        if now < due:
            return False
        if now - due > self.max_burst_s:
            self._start, self._n = now, 0
            self.resets += 1
        self._n += 1
        return True
