"""Drift signals per scope: the rate of recent frames above threshold and a rolling quantile of
recent raw scores (pure, thread-safe), exported as OpenTelemetry gauges by the caller."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

WINDOW = 256  # recent frames per scope
QUANTILE = 0.95
MAX_SCOPES = 256  # scopes watched one by one (and metric label values); the rest share OVERFLOW
OVERFLOW = "other"


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
    """RollingScores by scope, for the first `max_scopes` scopes seen; any later one is watched (and
    labelled in metrics) as OVERFLOW, so that frames naming ever new cameras or objects cannot grow
    the worker's memory or the metric series without bound."""

    def __init__(self, window: int = WINDOW, max_scopes: int = MAX_SCOPES) -> None:
        self._window = window
        self._max_scopes = max_scopes
        self._lock = threading.Lock()
        self._scopes: dict[str, RollingScores] = {}

    def label(self, scope: str) -> str:
        """The scope itself, or OVERFLOW once `max_scopes` others are watched."""
        with self._lock:
            return scope if scope in self._scopes or len(self._scopes) < self._max_scopes else OVERFLOW

    def observe(self, scope: str, raw: float, above: bool) -> tuple[float, float]:
        with self._lock:
            if scope not in self._scopes and len(self._scopes) >= self._max_scopes:
                scope = OVERFLOW
            rolling = self._scopes.setdefault(scope, RollingScores(self._window))
            return rolling.add(raw, above)
