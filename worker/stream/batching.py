"""Micro-batching and backpressure decisions of the poll loop (pure, clock passed in)."""
from __future__ import annotations

from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collects items into batches of at most `max_items`, closed at the latest
    `max_wait_s` after their first item arrived."""

    def __init__(self, max_items: int, max_wait_s: float):
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self.max_wait_s = max(0.0, max_wait_s)
        self._items: list[T] = []
        self._opened_at: float | None = None

    def add(self, item: T, now: float) -> None:
        if not self._items:
            self._opened_at = now
        self._items.append(item)

    def ready(self, now: float) -> bool:
        """A batch should be handed over: it is full, or its first item waited long enough."""
        if not self._items:
            return False
        return len(self._items) >= self.max_items or now - self._opened_at >= self.max_wait_s

    def take(self) -> list[T]:
        """The next batch (at most `max_items`); the rest stays, its clock restarted."""
        batch, self._items = self._items[: self.max_items], self._items[self.max_items :]
        self._opened_at = self._opened_at if self._items else None
        return batch

    def time_left(self, now: float) -> float | None:
        """Seconds until the open batch is due (0 when due now); None when empty."""
        if not self._items:
            return None
        if len(self._items) >= self.max_items:
            return 0.0
        return max(0.0, self.max_wait_s - (now - self._opened_at))

    def __len__(self) -> int:
        return len(self._items)


BackpressureAction = Literal["pause", "resume"] | None


def backpressure(waiting: int, limit: int, paused: bool) -> BackpressureAction:
    """Pause fetching at `limit` waiting frames; resume once they drained to half of it.

    The gap between the two marks keeps the consumer from flapping between
    pause and resume on every batch.
    """
    if not paused and waiting >= limit:
        return "pause"
    if paused and waiting <= limit // 2:
        return "resume"
    return None
