"""RedisEmbeddingCache against a real redis-server (infra/): storage format, sharing between
workers, password, corrupt entries, and Redis going away and coming back."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
import pytest
import redis
from pydantic import SecretStr

from common.settings import RedisSettings
from worker.inspection.redis_cache import RedisEmbeddingCache

pytestmark = pytest.mark.integration


def settings_for(redis_server, **overrides) -> RedisSettings:
    fields = dict(url=SecretStr(redis_server.url), key_prefix=f"test-{uuid.uuid4().hex[:8]}", retry_after_s=0.5)
    return RedisSettings(**(fields | overrides))


def raw_client(redis_server) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, socket_timeout=2)


def test_embeddings_written_by_one_worker_are_read_by_another(redis_server):
    settings = settings_for(redis_server)
    first, second = RedisEmbeddingCache(settings), RedisEmbeddingCache(settings)
    values = {
        "fp1:clip-text:aaa": np.random.default_rng(0).normal(size=(640,)).astype(np.float32),
        "fp1:clipseg-text:bbb": np.random.default_rng(1).normal(size=(1, 64)).astype(np.float16),
    }
    first.put_many(values)
    found = second.get_many(list(values) + ["fp1:clip-text:missing"])
    for (key, value), got in zip(values.items(), found):
        assert got is not None and got.dtype == value.dtype and np.array_equal(got, value), key
    assert found[-1] is None
    stats = second.stats()
    assert (stats.redis_hits, stats.lru_hits, stats.misses) == (2, 0, 1) and not stats.degraded
    second.get_many(list(values))  # now answered by the LRU in front
    assert second.stats().lru_hits == 2


def test_values_are_raw_little_endian_arrays_under_prefixed_keys(redis_server):
    settings = settings_for(redis_server)
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    RedisEmbeddingCache(settings).put_many({"fp:clip-text:cafe": value})
    stored = raw_client(redis_server).hgetall(f"{settings.key_prefix}:emb:fp:clip-text:cafe")
    assert stored == {b"dtype": b"<f4", b"shape": b"2,3", b"data": value.astype("<f4").tobytes()}


def test_a_corrupt_entry_is_a_miss_not_a_crash(redis_server, caplog):
    settings = settings_for(redis_server)
    raw_client(redis_server).hset(
        f"{settings.key_prefix}:emb:fp:clip-text:bad", mapping={"dtype": "<f4", "shape": "10", "data": b"\x00\x01"}
    )
    cache = RedisEmbeddingCache(settings)
    with caplog.at_level(logging.WARNING, logger="worker.inspection.redis_cache"):
        assert cache.get_many(["fp:clip-text:bad"]) == [None]
    assert "corrupt" in caplog.text and not cache.degraded


def test_password_from_settings(redis_server_factory):
    server = redis_server_factory(password="s3cret")
    url = SecretStr(f"redis://{server.host}:{server.port}/0")  # the password comes from settings, not the URL
    good = RedisEmbeddingCache(RedisSettings(url=url, password=SecretStr("s3cret"), key_prefix="pw"))
    assert good.check() and not good.degraded
    good.put_many({"fp:clip-text:p": np.ones(3, np.float32)})
    assert (
        RedisEmbeddingCache(RedisSettings(url=url, password=SecretStr("s3cret"), key_prefix="pw")).get_many(
            ["fp:clip-text:p"]
        )[0]
        is not None
    )
    wrong = RedisEmbeddingCache(RedisSettings(url=url, password=SecretStr("nope"), key_prefix="pw"))
    assert not wrong.check() and wrong.degraded
    missing = RedisEmbeddingCache(RedisSettings(url=url, key_prefix="pw"))
    assert missing.get_many(["fp:clip-text:p"]) == [None] and missing.degraded


def test_redis_going_away_degrades_once_and_recovers(redis_server_factory, caplog):
    redis_server = redis_server_factory()  # private: this test kills it
    settings = settings_for(redis_server, retry_after_s=0.5, socket_timeout_s=0.3)
    cache = RedisEmbeddingCache(settings)
    value = np.ones(8, np.float32)
    cache.put_many({"fp:clip-text:before": value})
    assert cache.check()
    redis_server.kill()
    try:
        with caplog.at_level(logging.INFO, logger="worker.inspection.redis_cache"):
            started = time.monotonic()
            assert cache.get_many(["fp:clip-text:x1"]) == [None]
            assert cache.degraded
            for i in range(5):  # within and after retry_after_s: still down, still one warning
                cache.get_many([f"fp:clip-text:y{i}"])
                cache.put_many({f"fp:clip-text:z{i}": value})
                time.sleep(0.2)
            assert time.monotonic() - started < 10  # short timeouts: down Redis costs little
            assert np.array_equal(cache.get_many(["fp:clip-text:before"])[0], value)  # the LRU still answers
            redis_server.restart()
            deadline = time.monotonic() + 15
            while cache.degraded and time.monotonic() < deadline:
                time.sleep(0.6)  # > retry_after_s
                cache.get_many([f"fp:clip-text:after-{time.monotonic()}"])
        assert not cache.degraded
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unavailable" in r.getMessage()]
        back = [r for r in caplog.records if "reachable again" in r.getMessage()]
        assert len(warnings) == 1 and len(back) == 1
        cache.put_many({"fp:clip-text:after": value})
        fresh = RedisEmbeddingCache(settings)
        assert np.array_equal(fresh.get_many(["fp:clip-text:after"])[0], value)
    finally:
        redis_server.start()  # no-op when it runs


def test_the_inspector_asks_the_redis_cache_for_every_prompt(redis_server):
    """One LRU layer (the cache's): warm lookups are still seen by the hook, as LRU hits."""
    from common.settings import ModelSettings
    from worker.inspection.inspector import Inspector, build_inspector
    from worker.inspection.types import Frame

    settings = settings_for(redis_server)
    seen = []

    def hook(hit, kind, layer, count):
        seen.extend([(hit, layer)] * count)

    writer = build_inspector(
        ModelSettings(profile="tiny", foreground="none"), cache=RedisEmbeddingCache(settings, on_lookup=hook)
    )
    frame = Frame("f", np.full((200, 200, 3), 128, np.uint8), "metal nut")
    writer.inspect([frame])
    prompts = len(seen)
    assert prompts > 0 and seen == [(False, "redis")] * prompts
    writer.inspect([frame])
    assert seen[prompts:] == [(True, "lru")] * prompts
    reader = Inspector(writer.models, writer.settings, cache=RedisEmbeddingCache(settings, on_lookup=hook))
    calls = reader.text_encoder_calls
    reader.inspect([frame])  # another worker: every prompt from Redis, none encoded
    assert seen[2 * prompts :] == [(True, "redis")] * prompts and reader.text_encoder_calls == calls
