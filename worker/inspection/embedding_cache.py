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


LookupHook = Callable[[bool, str, str], None]  # (hit, kind, layer), e.g. Metrics.cache_lookup


class EmbeddingCache(Protocol):
    """Where the Inspector looks up prompt embeddings before running a text encoder."""

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    def put_many(self, items: dict[str, np.ndarray]) -> None: ...


class LruEmbeddingCache:
    """In-process LRU of embeddings: the Inspector's cache when there is no Redis, and the
    front layer of the Redis cache (which then reports the lookups itself).

    `on_lookup(hit, kind, "lru")` is called for every key looked up.
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
        if self._on_lookup is not None:
            for key, value in zip(keys, found):
                self._on_lookup(value is not None, key_kind(key), "lru")
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        for key, value in items.items():
            self._entries[key] = value
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
