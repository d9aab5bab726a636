"""The one stage timer and the one peak-memory reading, for the Inspector, the bench and the evaluation."""

from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class StageClock:
    """Wall time in milliseconds per named stage (entering a stage again adds to its total),
    and the time since the clock was made."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self._started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - start) * 1000.0

    def elapsed_s(self) -> float:
        """Seconds since the clock was made."""
        return time.perf_counter() - self._started

    def elapsed_ms(self) -> float:
        return self.elapsed_s() * 1000.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
