"""Shared prompt-embedding cache in Redis, with an in-process LRU in front.

This is the one LRU layer of a worker with Redis: the Inspector asks this cache for every
prompt embedding of every call, so `on_lookup` sees every lookup (layer "lru" or "redis").

Every worker of a line computes the same prompt embeddings; the first one to
compute an embedding stores it in Redis and the others read it instead of running
a text encoder. Values are raw little-endian arrays stored as a Redis hash
``{dtype, shape, data, sig}`` under ``{prefix}:emb:{prompt_key}`` -- never pickle -- with
a TTL of `embedding_ttl_s`. A value read back is used only when its signature
(value_signing.py), size, dtype and shape (a float32 vector as wide as the model's
text embeddings) check out; otherwise it is refused, counted and logged, and the
caller computes it again, which overwrites it.

Redis is an accelerator, not a dependency: when it is unreachable the cache logs
one warning, reports itself `degraded`, answers from the LRU (misses are computed
locally by the caller) and tries Redis again after `retry_after_s`; it logs once
more when Redis is back and then writes there the embeddings computed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.metrics import Metrics
from common.settings import RedisSettings
from worker.inspection.embedding_cache import (
    EmbeddingCache,
    LookupHook,
    LruEmbeddingCache,
    key_kind,
    report_lookups,
)
from worker.inspection.value_signing import RefusedValue, ValueSigner, check_size

RefusedHook = Callable[[str, str], None]  # (what: embedding | bank | pool, reason)

log = logging.getLogger(__name__)

_ALLOWED_KINDS = "biuf"  # bool, signed/unsigned int, float; never object, void or strings
# Embeddings kept for Redis while it is down: the prompts of a few objects (about 1000 each, ~2.5 KB apiece).
_UNSAVED_MAX_ENTRIES = 4096


class CorruptEntryError(ValueError):
    """A Redis hash that is not a well-formed {dtype, shape, data} array."""


def encode_array(array: np.ndarray) -> dict[str, bytes]:
    """An array as the fields of a Redis hash: little-endian bytes plus dtype and shape."""
    array = np.asarray(array)
    if array.dtype.kind not in _ALLOWED_KINDS:
        raise TypeError(f"cannot cache arrays of dtype {array.dtype}")
    little = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
    return {
        "dtype": little.dtype.str.encode("ascii"),  # e.g. '<f4' ('|b1' for one-byte types)
        "shape": ",".join(str(n) for n in little.shape).encode("ascii"),
        "data": little.tobytes(),
    }


def decode_array(fields: Mapping[bytes | str, bytes]) -> np.ndarray:
    """Inverse of `encode_array`; raises CorruptEntryError on anything unexpected."""
    named = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    try:
        dtype = np.dtype(named["dtype"].decode("ascii"))
        shape_text = named["shape"].decode("ascii")
        shape = tuple(int(n) for n in shape_text.split(",")) if shape_text else ()
        data = named["data"]
    except (KeyError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CorruptEntryError(f"malformed cache entry: {exc}") from exc
    if dtype.kind not in _ALLOWED_KINDS or dtype.byteorder == ">":
        raise CorruptEntryError(f"unexpected dtype {dtype.str}")
    if any(n < 0 for n in shape) or int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(data):
        raise CorruptEntryError(f"{len(data)} bytes do not hold a {dtype.str} array of shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _failure_reason(exc: Exception) -> str:
    """Why Redis failed, for the one warning; a refused login also names the settings to fix."""
    if isinstance(exc, redis.AuthenticationError):  # no, or the wrong, password
        return (
            f"authentication failed ({exc}): set the Redis password in LINEWATCH_REDIS__PASSWORD "
            "or in LINEWATCH_REDIS__URL as redis://:PASSWORD@host:port/0"
        )
    return f"{type(exc).__name__}: {exc}"


def build_redis_client(settings: RedisSettings) -> redis.Redis | None:
    """A client for `settings.url` (redis:// or rediss://) with short timeouts and no retries.

    A password in the URL wins over `settings.password`. Returns None when no URL is set.
    """
    if settings.url is None:
        return None
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),  # one try: the cache falls back to local compute instead
        "health_check_interval": 30,
    }
    if settings.password is not None:
        options["password"] = settings.password.get_secret_value()
    if settings.username is not None:
        options["username"] = settings.username
    return redis.Redis.from_url(settings.url.get_secret_value(), **options)


@dataclass(frozen=True)
class CacheStats:
    lru_hits: int
    redis_hits: int
    misses: int
    redis_errors: int
    degraded: bool
    refused: int = 0

    @property
    def hits(self) -> int:
        return self.lru_hits + self.redis_hits


class RedisEmbeddingCache:
    """EmbeddingCache over Redis with an LRU in front; see the module docstring."""

    def __init__(
        self,
        settings: RedisSettings,
        client: redis.Redis | None = None,
        *,
        on_lookup: LookupHook | None = None,
        on_refused: RefusedHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client if client is not None else build_redis_client(settings)
        self._signer = ValueSigner(settings.signing_key_bytes())
        self._ttl_s = settings.embedding_ttl_s
        self._max_bytes = settings.max_embedding_bytes
        self._widths: dict[str, int] = {}  # kind -> the model's embedding width (see `expect`)
        self._on_refused = on_refused
        self._prefix = f"{settings.key_prefix}:emb:"
        self._retry_after_s = settings.retry_after_s
        self._lru = LruEmbeddingCache(settings.lru_entries)
        self._on_lookup = on_lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._degraded = False
        self._retry_at = 0.0
        self._unsaved: dict[str, np.ndarray] = {}  # put while Redis was down: written to it once it is back
        self._lru_hits = self._redis_hits = self._misses = self._errors = self._refused = 0

    def expect(self, widths: dict[str, int]) -> None:
        """The model's embedding width per kind ("clip-text": 640 ...): other shapes are refused."""
        self._widths = dict(widths)

    # ------------------------------------------------------------------ protocol

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        with self._lock:
            found = self._lru.get_many(keys)
        missing = [i for i, value in enumerate(found) if value is None]
        from_redis = self._redis_get([keys[i] for i in missing]) if missing else []
        for i, value in zip(missing, from_redis):
            found[i] = value
        layers = ["lru"] * len(keys)
        for i in missing:
            layers[i] = "redis" if self._client is not None else "lru"
        with self._lock:
            self._lru.put_many({keys[i]: found[i] for i in missing if found[i] is not None})
            for value, layer in zip(found, layers):
                if value is None:
                    self._misses += 1
                elif layer == "lru":
                    self._lru_hits += 1
                else:
                    self._redis_hits += 1
        report_lookups(self._on_lookup, keys, found, layers)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        with self._lock:
            self._lru.put_many(items)
        self._redis_put(items)

    # ------------------------------------------------------------------ health

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the worker computes embeddings locally."""
        return self._degraded

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._lru_hits, self._redis_hits, self._misses, self._errors, self._degraded, self._refused
            )

    def check(self) -> bool:
        """Ping Redis now (ignoring the retry delay); updates `degraded`. True when reachable."""
        if self._client is None:
            return False
        try:
            self._client.ping()
        except redis.RedisError as exc:
            self._failed(exc)
            return False
        self._succeeded()
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------------ internals

    def _redis_get(self, keys: list[str]) -> list[np.ndarray | None]:
        if not self._redis_usable():
            return [None] * len(keys)
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self._prefix + key)
            replies = pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)
            return [None] * len(keys)
        self._succeeded()
        values: list[np.ndarray | None] = []
        for key, fields in zip(keys, replies):
            values.append(self._checked(key, fields) if fields else None)
        return values

    def _checked(self, key: str, fields: dict) -> np.ndarray | None:
        """The embedding in `fields`, or None (refused: counted and logged) when it does not check out."""
        redis_key = self._prefix + key
        try:
            check_size(redis_key, len(fields.get(b"data", b"")), self._max_bytes)
            self._signer.check(redis_key, fields)
            try:
                value = decode_array(fields)
            except CorruptEntryError as exc:
                raise RefusedValue("corrupt", f"{redis_key}: {exc}") from None
            width = self._widths.get(key_kind(key))  # known once an Inspector uses this cache
            if width is not None and (value.dtype != np.float32 or value.shape != (width,)):
                raise RefusedValue("wrong_shape", f"{redis_key}: {value.dtype} {value.shape}, not float32 ({width},)")
        except RefusedValue as exc:
            with self._lock:
                self._refused += 1
            log.warning("refused embedding cache entry (%s): %s; computing it again", exc.reason, exc)
            if self._on_refused is not None:
                self._on_refused("embedding", exc.reason)
            return None
        return value

    def _redis_put(self, items: dict[str, np.ndarray]) -> None:
        if not self._redis_usable():
            self._remember_unsaved(items)
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in items.items():
                redis_key = self._prefix + key
                pipe.delete(redis_key)  # no field of a refused value (an old signature) survives the rewrite
                pipe.hset(redis_key, mapping=self._signer.sign(redis_key, encode_array(value)))
                if self._ttl_s:
                    pipe.expire(redis_key, self._ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            self._remember_unsaved(items)
            self._failed(exc)
        else:
            self._succeeded()

    def _redis_usable(self) -> bool:
        return self._client is not None and (not self._degraded or self._clock() >= self._retry_at)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._errors += 1
            self._retry_at = self._clock() + self._retry_after_s
            if self._degraded:
                log.debug("Redis embedding cache still unavailable: %s", exc)
                return
            self._degraded = True
        log.warning(
            "Redis embedding cache unavailable: %s; computing embeddings locally, retrying in %.0f s",
            _failure_reason(exc),
            self._retry_after_s,
        )

    def _succeeded(self) -> None:
        if not self._degraded:
            return
        with self._lock:
            self._degraded = False
        log.info("Redis embedding cache is reachable again")
        self._save_unsaved()

    def _remember_unsaved(self, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            for key, value in items.items():
                if len(self._unsaved) < _UNSAVED_MAX_ENTRIES:
                    self._unsaved[key] = value

    def _save_unsaved(self) -> None:
        """Write the embeddings computed during the outage, so other workers need not compute them too."""
        with self._lock:
            items, self._unsaved = self._unsaved, {}
        if items:
            self._redis_put(items)


def build_embedding_cache(
    settings: RedisSettings, *, on_lookup: LookupHook | None = None, metrics: Metrics | None = None
) -> EmbeddingCache:
    """The cache a worker hands to `build_inspector`: Redis-backed, or an LRU only when no URL is set.

    Either way it is the Inspector's only cache layer, so `on_lookup` (default: `metrics.cache_lookup`)
    sees every lookup; refused Redis values are counted in `metrics`.
    """
    if metrics is not None:
        on_lookup = on_lookup or metrics.cache_lookup
    on_refused = metrics.redis_value_refused if metrics is not None else None
    if settings.url is None:
        return LruEmbeddingCache(settings.lru_entries, on_lookup=on_lookup)
    cache = RedisEmbeddingCache(settings, on_lookup=on_lookup, on_refused=on_refused)
    cache.check()  # so `degraded` is meaningful from the first health probe
    return cache
