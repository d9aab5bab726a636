"""State keyed by ids that a frame's producer chooses (camera ids, object names) is bounded.

`BoundedMap` keeps at most `capacity` entries: adding one more forgets the least recently seen entry,
counts it (`evicted`) and logs a warning at the first eviction and every `LOG_EVERY`-th after it, so
a producer that invents camera ids costs a fixed amount of memory and says so in the log.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
LOG_EVERY = 1000


class BoundedMap(Generic[K, V]):
    def __init__(self, capacity: int, what: str) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity, self.what = capacity, what
        self.evicted = 0
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def get(self, key: K) -> V | None:
        """The entry, now the most recently seen; None when there is none."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The entry, its place left as it is (a read, not a sighting)."""
        return self._items.get(key)

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Add or replace `key` as the most recently seen; returns the entries that made room for it."""
        self._items[key] = value
        self._items.move_to_end(key)
        evicted = []
        while len(self._items) > self.capacity:
            evicted.append(self._items.popitem(last=False))
            self.evicted += 1
            if self.evicted % LOG_EVERY == 1 or LOG_EVERY == 1:
                log.warning(
                    "%s: more than %d kept; the least recently seen (%s) is forgotten (%d so far)",
                    self.what,
                    self.capacity,
                    evicted[-1][0],
                    self.evicted,
                )
        return evicted

    def setdefault(self, key: K, new: Callable[[], V]) -> V:
        """The entry for `key`, or a `new()` one added; either way now the most recently seen."""
        value = self.get(key)
        if value is None:
            value = new()
            self.put(key, value)
        return value

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)
