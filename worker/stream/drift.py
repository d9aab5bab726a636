"""Drift signals per scope: the rate of recent frames above threshold and a rolling quantile of
recent raw scores (pure, thread-safe), exported as OpenTelemetry gauges by the caller."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

WINDOW = 256  # recent frames per scope
QUANTILE = 0.95


class RollingScores:
    """The last `window` (raw score, above threshold) pairs of one scope."""

    def __init__(self, window: int = WINDOW) -> None:
        self._raw: deque[float] = deque(maxlen=window)
        self._above: deque[bool] = deque(maxlen=window)

    def add(self, raw: float, above: bool) -> tuple[float, float]:
        """Add one frame; returns (fraction above threshold, QUANTILE of raw scores) over the window."""
        self._raw.append(float(raw))
        self._above.append(bool(above))
        return sum(self._above) / len(self._above), float(np.quantile(np.fromiter(self._raw, float), QUANTILE))


class DriftWatch:
    """RollingScores by scope."""

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._scopes: dict[str, RollingScores] = {}

    def observe(self, scope: str, raw: float, above: bool) -> tuple[float, float]:
        with self._lock:
            rolling = self._scopes.setdefault(scope, RollingScores(self._window))
            return rolling.add(raw, above)
