"""Prompt-embedding caches.

An embedding is identified by (model fingerprint, kind, exact prompt text); the
text is hashed so keys stay short and printable. `kind` separates the CLIP text
tower ("clip-text") from CLIPSeg's conditional embeddings ("clipseg-text").
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


def prompt_key(model_fingerprint: str, kind: str, text: str) -> str:
    """Cache key of one prompt embedding: fingerprint, kind, sha256 of the text."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    return f"{model_fingerprint}:{kind}:{digest}"


def key_kind(key: str) -> str:
    """The `kind` part of a `prompt_key` ("unknown" for a key of another shape)."""
    parts = key.split(":")
    return parts[-2] if len(parts) >= 3 else "unknown"


# (hit, kind, layer, count), e.g. Metrics.cache_lookup: called once per distinct (hit, kind, layer) of a
# lookup, with how many keys it covers, since one batch looks up ~950 prompts and a metric call costs ~6 us.
LookupHook = Callable[[bool, str, str, int], None]


def report_lookups(
    hook: LookupHook | None, keys: Sequence[str], found: Sequence[object | None], layers: Sequence[str]
) -> None:
    """Tell `hook` how the keys of one lookup fared, grouped by (hit, kind, layer) in first-seen order."""
    if hook is None:
        return
    counts: dict[tuple[bool, str, str], int] = {}
    for key, value, layer in zip(keys, found, layers):
        group = (value is not None, key_kind(key), layer)
        counts[group] = counts.get(group, 0) + 1
    for (hit, kind, layer), count in counts.items():
        hook(hit, kind, layer, count)


class EmbeddingCache(Protocol):
    """Where the Inspector looks up prompt embeddings before running a text encoder."""

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    def put_many(self, items: dict[str, np.ndarray]) -> None: ...


class LruEmbeddingCache:
    """In-process LRU of embeddings: the Inspector's cache when there is no Redis, and the
    front layer of the Redis cache (which then reports the lookups itself).

    `on_lookup(hit, kind, "lru", count)` reports every key looked up (see `report_lookups`).
    """

    def __init__(
        self, max_entries: int = 1024, *, on_lookup: LookupHook | None = None
    ):  # 1024: one object's prompts fit
        self.max_entries = max_entries
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._on_lookup = on_lookup

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        found: list[np.ndarray | None] = []
        for key in keys:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            found.append(value)
        report_lookups(self._on_lookup, keys, found, ["lru"] * len(keys))
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        for key, value in items.items():
            self._entries[key] = value
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
