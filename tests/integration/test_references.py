"""Reference banks against the real broker and Redis (tiny profile): two workers share one bank,
a new version announced on the control topic reaches both within 5 s, and a bank survives a
worker restart and a Redis restart.

The fusion weight is 1 (few-shot only), so a frame identical to the bank's reference scores ~0
and any other frame clearly more: which bank a worker used shows in its results' raw scores.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis as redis_lib
from pydantic import SecretStr

from common.codecs import encode_image
from common.control_topic import read_control_topic
from common.schemas import utc_now
from common.settings import LinewatchSettings
from producer.publisher import build_frame_meta
from tests.integration.test_control import ResultsTap
from tests.integration.test_worker_service import make_settings, publish_frames, running, wait_until, with_worker
from worker.cli import build_parser
from worker.inspection.fewshot.store import open_store
from worker.inspection.inspector import build_inspector
from worker.stream import references as references_module
from worker.stream.references_cli import run_references
from worker.stream.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

OBJECT = "washer"
SCOPE = f"object:{OBJECT}"
SIDE = 96  # a small frame: one tile, upscaled to the model input
NEAR_ZERO = 1e-3


def texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(60, 200, size=(8, 8, 3)), np.ones((SIDE // 8, SIDE // 8, 1))).astype(np.uint8)


A, B = texture(1), texture(2)


def worker(settings: LinewatchSettings, worker_id: str) -> WorkerService:
    """A worker whose models are built here, one after the other: tiny random weights come from the
    global torch generator, so workers building theirs at once in threads would differ (and so would
    their model fingerprints, which key the banks)."""
    settings = with_worker(settings, worker_id=worker_id)
    return WorkerService(settings, build_inspector(settings.models))


def fewshot_settings(kafka_broker, redis_url: str) -> LinewatchSettings:
    settings = make_settings(kafka_broker, redis_url, batch_max_frames=2)
    kafka = settings.kafka.model_copy(update={"control_topic": f"test.control.{uuid.uuid4().hex[:8]}"})
    models = settings.models.model_copy(update={"few_shot_weight": 1.0})
    return settings.model_copy(update={"kafka": kafka, "models": models})


def add_references(settings: LinewatchSettings, tmp_path: Path, image: np.ndarray, *extra: str) -> None:
    path = tmp_path / f"ref-{uuid.uuid4().hex[:6]}.png"
    path.write_bytes(encode_image(image, "image/png"))
    args = build_parser().parse_args(["references", "add", str(path), "--object", OBJECT, *extra])
    assert run_references(args, settings) == 0


def frames_of(image: np.ndarray, tag: str, count: int = 4):
    """`count` PNG frames of `image`, one camera per partition (the results say which image by camera)."""
    data = encode_image(image, "image/png")
    return [
        (
            build_frame_meta(
                camera_id=f"{tag}-{i}",
                line_id="line-1",
                object_name=OBJECT,
                content_type="image/png",
                width=SIDE,
                height=SIDE,
            ),
            data,
        )
        for i in range(count)
    ]


class Line:
    """Frames of A and B, one of each per partition every `interval_s`, until stopped."""

    def __init__(self, settings: LinewatchSettings, interval_s: float = 0.4):
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                publish_frames(settings, frames_of(A, "a") + frames_of(B, "b"))
                self._stop.wait(interval_s)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)


def scored(tap: ResultsTap, image_tag: str, *, near_zero: bool, worker: str | None = None, after=None):
    """Results for frames of image `image_tag` ('a'/'b') whose raw score is (or is not) ~0."""
    return [
        r
        for r in tap.snapshot()
        if r.camera_id.startswith(f"{image_tag}-")
        and (r.raw_score < NEAR_ZERO) == near_zero
        and (worker is None or r.worker_id == worker)
        and (after is None or r.processed_at > after)
    ]


def test_two_workers_share_one_bank_and_use_a_new_version_within_5_s(kafka_broker, redis_server, tmp_path):
    settings = fewshot_settings(kafka_broker, redis_server.url)
    add_references(settings, tmp_path, A)
    table, _ = read_control_topic(settings.kafka)
    first_version = table.records[SCOPE].references.version
    tap = ResultsTap(settings)
    workers = {"worker-a", "worker-b"}
    with running(worker(settings, "worker-a")):
        with running(worker(settings, "worker-b")):
            line = Line(settings)
            try:
                wait_until(
                    lambda: {r.worker_id for r in scored(tap, "a", near_zero=True)} == workers,
                    180,
                    "both workers to score the reference frame ~0 with the bank",
                )
                assert not scored(tap, "b", near_zero=True), "a frame unlike the bank must not score ~0"
                add_references(settings, tmp_path, B, "--replace")  # returns once the record is acknowledged
                announced = utc_now()

                def switched() -> dict[str, float]:
                    delays: dict[str, float] = {}
                    for r in scored(tap, "b", near_zero=True, after=announced):
                        delay = (r.processed_at - announced).total_seconds()
                        delays[r.worker_id] = min(delays.get(r.worker_id, delay), delay)
                    return delays

                wait_until(lambda: set(switched()) == workers, 30, "both workers to use the new bank")
            finally:
                line.stop()
    tap.close()
    table, _ = read_control_topic(settings.kafka)
    second = table.records[SCOPE].references
    assert second.version != first_version and second.frames == 1
    for worker_id, delay in sorted(switched().items()):
        print(f"\n{worker_id}: bank v{second.version} announced -> first result with it: {delay * 1000:.0f} ms")
        assert delay < 5.0
    # and the old bank's reference is no longer ~0 once the new one is in force
    assert scored(tap, "a", near_zero=False, after=announced)
    # every result names the bank that scored it
    banks_seen = {r.versions.reference_bank for r in scored(tap, "a", near_zero=True)}
    assert banks_seen == {f"{SCOPE}@v{first_version}"}
    assert {r.versions.reference_bank for r in scored(tap, "b", near_zero=True, after=announced)} == {
        f"{SCOPE}@v{second.version}"
    }


def test_a_bank_survives_a_worker_restart_and_a_redis_restart(
    kafka_broker, redis_server_factory, tmp_path, monkeypatch
):
    monkeypatch.setattr(references_module, "HEAL_INTERVAL_S", 0.5)
    redis = redis_server_factory()
    settings = fewshot_settings(kafka_broker, redis.url)
    add_references(settings, tmp_path, A)
    version = read_control_topic(settings.kafka)[0].records[SCOPE].references.version
    store = open_store(settings.redis)
    tap = ResultsTap(settings)

    def uses_bank(worker: str, after=None) -> bool:
        return bool(scored(tap, "a", near_zero=True, worker=worker, after=after))

    line = Line(settings)
    try:
        with running(worker(settings, "before-restart")):
            wait_until(lambda: uses_bank("before-restart"), 180, "the first worker to use the bank")
        with running(worker(settings, "restarted")):
            wait_until(lambda: uses_bank("restarted"), 120, "the restarted worker to load the bank from Redis")
            sentinel = redis_lib.Redis.from_url(redis.url)
            sentinel.set("test-sentinel", b"1")  # the worker never writes it back, unlike the bank
            redis.stop()
            redis.start()  # no persistence: Redis comes back empty
            restarted_at = utc_now()
            # checked on a key of the test's own: the worker may write the bank back within HEAL_INTERVAL_S
            assert not sentinel.exists("test-sentinel"), "the Redis restart should have lost every key"
            wait_until(lambda: uses_bank("restarted", after=restarted_at), 60, "the bank in memory still in use")
            wait_until(lambda: bool(store.list_banks(SCOPE)), 60, "the worker to write the bank back to Redis")
        assert [b.version for b in store.list_banks(SCOPE)] == [version]
        with running(worker(settings, "after-redis-restart")):
            wait_until(lambda: uses_bank("after-redis-restart"), 120, "a new worker to load the written-back bank")
    finally:
        line.stop()
        tap.close()
    assert not scored(tap, "b", near_zero=True)


def test_two_workers_share_one_rolling_pool_through_redis(redis_server):
    """Each worker's frames join the scope's ring in Redis; the others read them back (newest M kept)."""
    from common.settings import ModelSettings, RedisSettings
    from worker.stream.references import ReferenceBanks

    redis_settings = RedisSettings(url=SecretStr(redis_server.url), key_prefix=f"test-{uuid.uuid4().hex[:8]}")
    models = ModelSettings(profile="tiny", pool_frames=4, pool_refresh_s=0.01)
    first, second = (
        ReferenceBanks(models, open_store(redis_settings)),
        ReferenceBanks(models, open_store(redis_settings)),
    )
    first.bind("tiny-test")
    second.bind("tiny-test")
    frames = [np.full((2, 3, 8), i, dtype=np.float32) for i in range(6)]
    pool_a = first.context(None, "cam-1", OBJECT).pool
    for frame in frames[:2]:
        pool_a.add(frame)
    time.sleep(0.02)
    pool_b = second.context(None, "cam-1", OBJECT).pool
    assert [int(f[0, 0, 0]) for f in pool_b.frames()] == [0, 1]
    for frame in frames[2:]:
        pool_b.add(frame)  # the second worker's frames, into the same ring
    time.sleep(0.02)
    pool_a = first.context(None, "cam-1", OBJECT).pool
    assert [int(f[0, 0, 0]) for f in pool_a.frames()] == [2, 3, 4, 5]  # the newest 4, whoever pushed them
    assert second.context(None, "cam-2", OBJECT).pool is not pool_b  # pools are per camera and object
    assert first.memory()["pools"] == 4 * frames[0].nbytes


def test_a_corrupt_bank_in_redis_is_refused_and_the_worker_stays_zero_shot(redis_server, caplog):
    from common.control import ControlRecord, ReferenceSet
    from common.settings import ModelSettings, RedisSettings
    from worker.stream.references import ReferenceBanks

    redis_settings = RedisSettings(url=SecretStr(redis_server.url), key_prefix=f"test-{uuid.uuid4().hex[:8]}")
    store = open_store(redis_settings)
    store.client.hset(store.bank_key("tiny-test", SCOPE, "3"), mapping={"dtype": "|O", "shape": "1", "data": b"x"})
    banks = ReferenceBanks(ModelSettings(profile="tiny"), store)
    banks.bind("tiny-test")
    banks.announced(SCOPE, ControlRecord(version=3, references=ReferenceSet(version="3")))
    assert banks.bank(SCOPE) is None and banks.context(SCOPE, "cam-1", OBJECT) is None
    assert "reference bank v3 refused (corrupt)" in caplog.text


def test_references_list_show_delete_against_the_broker_and_redis(kafka_broker, redis_server, tmp_path, capsys):
    settings = fewshot_settings(kafka_broker, redis_server.url)
    add_references(settings, tmp_path, A)
    add_references(settings, tmp_path, B)  # adds to the bank in force: 2 frames
    capsys.readouterr()

    def run(*argv: str) -> tuple[int, str, str]:
        code = run_references(build_parser().parse_args(["references", *argv]), settings)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("list")
    listed = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["scope"], r["bank_version"], r["frames"]) for r in listed] == [(SCOPE, "2", 2)]
    assert listed[0]["in_redis"] and listed[0]["patches"] == 32  # 16 patches per tiny tile, both frames kept
    code, out, _ = run("show", "--scope", SCOPE)
    assert code == 0 and json.loads(out)["record_version"] == 2
    code, out, _ = run("delete", "--scope", SCOPE)
    assert code == 0 and json.loads(out)["deleted_banks"] >= 1
    record = read_control_topic(settings.kafka)[0].records[SCOPE]
    assert record.references is None and record.version == 3
    assert run("show", "--scope", SCOPE)[0] == 1 and run("list")[1] == ""
    code, _, err = run("show", "--scope", "nonsense")
    assert code == 2 and "not a control scope" in err


def test_pool_delete_takes_only_its_scope_even_with_glob_characters_in_the_name(redis_server):
    """Object names are free text: a `*` or `[` in one must not make SCAN match the other scopes' keys."""
    from common.settings import RedisSettings

    store = open_store(RedisSettings(url=SecretStr(redis_server.url), key_prefix=f"test-[{uuid.uuid4().hex[:6]}]*"))
    features = np.ones((1, 2, 4), dtype=np.float32)
    for scope in ("object:bolt*", "object:bolt-m8", "object:bolt[a]"):
        for _ in range(3):
            store.pool_push("fp", scope, features, size=2)
    assert store.pool_delete("fp", "object:bolt*") == 3  # its two ring slots and its counter
    assert store.pool_read("fp", "object:bolt-m8", 2)[0] == 3 and store.pool_read("fp", "object:bolt[a]", 2)[0] == 3
    assert store.pool_read("fp", "object:bolt*", 2) == (0, [])
