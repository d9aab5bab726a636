"""Array codec of the Redis embedding cache, and its behaviour with no Redis listening.

No Redis is mocked: "unreachable" is a real client pointed at a closed port.
"""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import SecretStr, ValidationError

from common.settings import RedisSettings
from worker.inspection.embedding_cache import LruEmbeddingCache
from worker.inspection.redis_cache import (
    CorruptEntryError,
    RedisEmbeddingCache,
    build_embedding_cache,
    decode_array,
    encode_array,
)


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float16, np.float64, ">f4", np.int64, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
    )
)
def test_encode_decode_round_trip(array):
    fields = encode_array(array)
    assert fields["dtype"].startswith((b"<", b"|"))  # little-endian on the wire
    back = decode_array(fields)
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    assert np.array_equal(back, array, equal_nan=array.dtype.kind == "f")
    assert back.flags.writeable  # a real array, not a read-only view on Redis' bytes


def test_redis_bytes_decode_too():
    fields = {k.encode(): v for k, v in encode_array(np.arange(6, dtype=np.float32).reshape(2, 3)).items()}
    assert decode_array(fields).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"dtype": b"<f4", "shape": b"2", "data": b"\0" * 4},  # too few bytes
        {"dtype": b"|O", "shape": b"1", "data": b"\0" * 8},  # object dtype: never
        {"dtype": b">f4", "shape": b"1", "data": b"\0" * 4},  # not little-endian
        {"dtype": b"<f4", "shape": b"x", "data": b""},
        {"dtype": b"nonsense", "shape": b"1", "data": b""},
    ],
)
def test_corrupt_entries_are_refused(fields):
    with pytest.raises(CorruptEntryError):
        decode_array(fields)


def test_object_arrays_are_not_cached():
    with pytest.raises(TypeError):
        encode_array(np.array([object()]))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_redis_degrades_once_and_serves_from_the_lru(caplog):
    now = [100.0]
    settings = RedisSettings(
        url=SecretStr(f"redis://127.0.0.1:{_closed_port()}/0"), retry_after_s=5.0, socket_timeout_s=0.2
    )
    cache = RedisEmbeddingCache(settings, clock=lambda: now[0])
    value = np.ones(4, np.float32)
    with caplog.at_level(logging.WARNING, logger="worker.inspection.redis_cache"):
        assert cache.get_many(["fp:clip-text:a"]) == [None]
        cache.put_many({"fp:clip-text:a": value})
        now[0] += 10.0  # past retry_after_s: tries again, fails again, but does not warn again
        assert cache.get_many(["fp:clip-text:b"]) == [None]
    assert cache.degraded
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    found = cache.get_many(["fp:clip-text:a"])[0]
    assert np.array_equal(found, value)  # the LRU in front still answers
    stats = cache.stats()
    assert stats.misses == 2 and stats.lru_hits == 1 and stats.redis_errors == 2 and stats.degraded


def test_no_url_means_lru_only():
    assert isinstance(build_embedding_cache(RedisSettings(url=None)), LruEmbeddingCache)


def test_the_one_lru_holds_at_least_one_objects_prompts():
    from worker.inspection.prompts import DEFAULT_PROMPTS

    normal, anomalous = DEFAULT_PROMPTS.state_prompts("metal nut")
    lru = build_embedding_cache(RedisSettings(url=None))
    assert lru.max_entries >= 4 * (len(normal) + len(anomalous) + len(DEFAULT_PROMPTS.localising))  # four objects
    with pytest.raises(ValidationError, match="lru_entries"):
        RedisSettings(lru_entries=16)  # too small for one object's prompts: refused, not silently raised


def test_lru_only_cache_reports_every_lookup_too():
    seen = []
    cache = build_embedding_cache(
        RedisSettings(url=None), on_lookup=lambda hit, kind, layer, count: seen.extend([(hit, kind, layer)] * count)
    )
    cache.put_many({"fp:clip-text:x": np.zeros(2, np.float32)})
    cache.get_many(["fp:clip-text:x", "fp:clipseg-text:y"])
    assert seen == [(True, "clip-text", "lru"), (False, "clipseg-text", "lru")]


def test_lookup_hook_reports_kind_and_layer():
    seen = []
    settings = RedisSettings(url=SecretStr(f"redis://127.0.0.1:{_closed_port()}/0"), socket_timeout_s=0.2)
    cache = RedisEmbeddingCache(
        settings, on_lookup=lambda hit, kind, layer, count: seen.extend([(hit, kind, layer)] * count)
    )
    cache.put_many({"fp:clipseg-text:x": np.zeros(2, np.float32)})
    cache.get_many(["fp:clipseg-text:x", "fp:clip-text:y"])
    assert seen == [(True, "clipseg-text", "lru"), (False, "clip-text", "redis")]


def test_one_lookup_reports_each_outcome_once_with_its_count():
    calls = []
    cache = LruEmbeddingCache(on_lookup=lambda *args: calls.append(args))
    cache.put_many({"fp:clip-text:a": np.zeros(2, np.float32)})
    cache.get_many(["fp:clip-text:a", "fp:clip-text:b", "fp:clip-text:c", "fp:clipseg-text:d", "fp:clip-text:a"])
    assert calls == [(True, "clip-text", "lru", 2), (False, "clip-text", "lru", 2), (False, "clipseg-text", "lru", 1)]
