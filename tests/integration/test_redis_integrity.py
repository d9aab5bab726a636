"""Values read from a real redis-server are checked before use: signature (HMAC-SHA256 over key name,
dtype, shape, bytes), size, dtype and shape against the model; embeddings expire."""

from __future__ import annotations

import logging
import uuid

import numpy as np
import pytest
import redis
from pydantic import SecretStr

from common.control import ControlRecord, ReferenceSet
from common.settings import ModelSettings, RedisSettings
from worker.inspection.fewshot.bank import PatchBank
from worker.inspection.fewshot.store import FeatureShape, open_store
from worker.inspection.redis_cache import RedisEmbeddingCache
from worker.inspection.value_signing import RefusedValue
from worker.stream.references import ReferenceBanks

pytestmark = pytest.mark.integration

KEY = SecretStr("a-long-random-signing-key")
WIDTH = 8


def settings_for(url: str, **overrides) -> RedisSettings:
    fields = dict(url=SecretStr(url), key_prefix=f"linewatch:{uuid.uuid4().hex[:8]}", signing_key=KEY)
    return RedisSettings(**(fields | overrides))


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(WIDTH,)).astype(np.float32)


def cache_for(settings: RedisSettings, refusals: list | None = None) -> RedisEmbeddingCache:
    cache = RedisEmbeddingCache(settings, on_refused=(lambda *r: refusals.append(r)) if refusals is not None else None)
    cache.expect({"clip-text": WIDTH})
    return cache


def test_embeddings_are_signed_expire_and_read_back(redis_server):
    settings = settings_for(redis_server.url, embedding_ttl_s=3600)
    cache_for(settings).put_many({"fp:clip-text:a": vector(0)})
    raw = redis.Redis.from_url(redis_server.url)
    key = f"{settings.key_prefix}:emb:fp:clip-text:a"
    assert set(raw.hgetall(key)) == {b"dtype", b"shape", b"data", b"sig"}
    assert 3500 < raw.ttl(key) <= 3600
    reader = cache_for(settings)
    assert np.array_equal(reader.get_many(["fp:clip-text:a"])[0], vector(0)) and reader.stats().refused == 0


@pytest.mark.parametrize("tamper", ["unsigned", "bad_signature", "moved", "wrong_shape", "too_large"])
def test_a_tampered_embedding_is_refused_counted_and_replaced_when_computed_again(redis_server, tamper, caplog):
    settings = settings_for(redis_server.url, max_embedding_bytes=1024)
    raw = redis.Redis.from_url(redis_server.url)
    anomalous, normal = (
        f"{settings.key_prefix}:emb:fp:clip-text:anomalous",
        f"{settings.key_prefix}:emb:fp:clip-text:normal",
    )
    cache_for(settings).put_many({"fp:clip-text:anomalous": vector(1), "fp:clip-text:normal": vector(2)})
    if tamper == "unsigned":
        raw.hdel(anomalous, "sig")
    elif tamper == "bad_signature":
        raw.hset(anomalous, "data", np.zeros(WIDTH, np.float32).tobytes())
    elif tamper == "moved":  # a normal prompt's valid value under an anomalous prompt's key
        raw.delete(anomalous)
        raw.hset(anomalous, mapping=raw.hgetall(normal))
    elif tamper == "wrong_shape":  # signed with the right key, but not this model's width
        cache_for(settings).put_many({"fp:clip-text:anomalous": np.zeros(WIDTH + 1, np.float32)})
    else:
        raw.hset(anomalous, mapping={"data": b"\0" * 4096, "shape": b"1024"})
    refusals: list = []
    reader = cache_for(settings, refusals)
    with caplog.at_level(logging.WARNING, logger="worker.inspection.redis_cache"):
        found = reader.get_many(["fp:clip-text:anomalous", "fp:clip-text:normal"])
    assert found[0] is None and np.array_equal(found[1], vector(2))  # refused = a miss: the caller computes it
    reason = {"moved": "bad_signature"}.get(tamper, tamper)
    assert refusals == [("embedding", reason)] and reader.stats().refused == 1 and "refused" in caplog.text
    reader.put_many({"fp:clip-text:anomalous": vector(1)})  # what the Inspector does with a miss
    fresh = cache_for(settings)
    assert np.array_equal(fresh.get_many(["fp:clip-text:anomalous"])[0], vector(1)) and fresh.stats().refused == 0


def test_without_a_signing_key_values_are_unsigned_but_still_shape_checked(redis_server):
    settings = settings_for(redis_server.url, signing_key=None)
    cache_for(settings).put_many({"fp:clip-text:a": vector(0), "fp:clip-text:b": np.zeros(3, np.float32)})
    assert b"sig" not in redis.Redis.from_url(redis_server.url).hgetall(f"{settings.key_prefix}:emb:fp:clip-text:a")
    assert [v is not None for v in cache_for(settings).get_many(["fp:clip-text:a", "fp:clip-text:b"])] == [True, False]


def bank(layers=(3, 7), channels=16, patches=20) -> PatchBank:
    features = np.random.default_rng(0).normal(size=(len(layers), patches, channels)).astype(np.float32)
    return PatchBank(features, frames=4, layers=tuple(layers))


def test_banks_are_signed_and_refused_when_tampered_too_large_or_not_of_the_model(redis_server):
    store, shape = open_store(settings_for(redis_server.url)), FeatureShape((3, 7), 16)
    store.max_bank_bytes = 4 * 2 * 20 * 16  # the 20-patch bank fits, not the 40-patch one
    store.put_bank("fp", "object:nut", "1", bank())
    assert store.get_bank("fp", "object:nut", "1", shape).patches == 20
    cases = {
        "2": (bank(layers=(3,)), "wrong_shape"),  # one layer, the model uses two
        "3": (bank(channels=8), "wrong_shape"),
        "4": (bank(patches=40), "too_large"),
    }
    for version, (stored, _) in cases.items():
        store.put_bank("fp", "object:nut", version, stored)
    for version, (_, reason) in cases.items():
        with pytest.raises(RefusedValue) as refused:
            store.get_bank("fp", "object:nut", version, shape)
        assert refused.value.reason == reason, version
    raw = redis.Redis.from_url(redis_server.url)
    raw.hset(store.bank_key("fp", "object:nut", "1"), "frames", b"400")  # metadata is signed too
    with pytest.raises(RefusedValue, match="signature"):
        store.get_bank("fp", "object:nut", "1", shape)


def test_a_scope_whose_bank_is_refused_goes_on_without_one(redis_server, caplog):
    settings = settings_for(redis_server.url)
    store = open_store(settings)
    refusals: list = []
    banks = ReferenceBanks(ModelSettings(profile="tiny"), store)
    banks.on_refused = lambda *r: refusals.append(r)
    banks.bind("fp", FeatureShape((3, 7), 16))
    store.put_bank("fp", "object:nut", "1", bank(channels=32))  # well formed and signed, of another model
    with caplog.at_level(logging.WARNING, logger="worker.stream.references"):
        banks.announced("object:nut", ControlRecord(version=2, references=ReferenceSet(version="1", frames=4)))
    assert banks.bank("object:nut") is None and banks.context("object:nut", "cam-1", "nut") is None
    assert refusals == [("bank", "wrong_shape")] and "refused" in caplog.text


def test_pool_frames_that_do_not_check_out_are_left_out(redis_server):
    settings = settings_for(redis_server.url)
    store, shape = open_store(settings), FeatureShape((3, 7), 16)
    frame = np.ones((2, 5, 16), np.float32)
    for _ in range(3):
        store.pool_push("fp", "camera:c/object:nut", frame, size=4)
    raw = redis.Redis.from_url(redis_server.url)
    raw.hset(store._pool_key("fp", "camera:c/object:nut", "2"), "data", np.zeros_like(frame).tobytes())  # tampered
    refused: list[RefusedValue] = []
    latest, frames = store.pool_read("fp", "camera:c/object:nut", 4, 0, shape, refused)
    assert latest == 3 and [seq for seq, _ in frames] == [1, 3]
    assert [r.reason for r in refused] == ["bad_signature"]


def test_the_inspector_computes_a_refused_embedding_again_and_stores_it_signed(redis_server):
    from worker.inspection.inspector import Inspector, build_inspector
    from worker.inspection.types import Frame

    settings = settings_for(redis_server.url)
    writer = build_inspector(ModelSettings(profile="tiny", foreground="none"), cache=RedisEmbeddingCache(settings))
    widths = writer.embedding_widths()
    assert widths["clip-text"] > 0 and widths["clipseg-text"] > 0
    frame = Frame("f", np.full((120, 120, 3), 128, np.uint8), "metal nut")
    writer.inspect([frame])
    raw = redis.Redis.from_url(redis_server.url)
    keys = sorted(raw.scan_iter(match=f"{settings.key_prefix}:emb:*clip-text*"))
    victim = keys[0]
    stored = raw.hgetall(victim)
    raw.hset(victim, "data", np.zeros(widths["clip-text"], np.float32).tobytes())  # a blinded prompt
    refusals: list = []
    reader = Inspector(
        writer.models, writer.settings, cache=RedisEmbeddingCache(settings, on_refused=lambda *r: refusals.append(r))
    )
    calls = reader.text_encoder_calls
    reader.inspect([frame])
    assert refusals == [("embedding", "bad_signature")] and reader.text_encoder_calls == calls + 1
    # computed again (alone, so to float rounding) and stored signed over the tampered value
    again = np.frombuffer(raw.hgetall(victim)[b"data"], np.float32)
    assert np.allclose(again, np.frombuffer(stored[b"data"], np.float32), atol=1e-5)
    fresh = RedisEmbeddingCache(settings)
    fresh.expect(widths)
    assert fresh.get_many([victim.decode().split(":emb:", 1)[1]])[0] is not None and fresh.stats().refused == 0
