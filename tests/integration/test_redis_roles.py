"""Least privilege in Redis, on a real redis-server run with compose's ACL users: a worker reaches the
embedding, bank and pool keys with the commands linewatch sends and nothing else; the references user
reaches banks only; nobody else has a user; a worker without a signing key does not start."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from pydantic import SecretStr

from common.redis_acl import acl_rules
from common.settings import RedisSettings
from worker.inspection.fewshot.bank import PatchBank
from worker.inspection.fewshot.store import FeatureShape, open_store
from worker.inspection.redis_cache import RedisEmbeddingCache
from worker.inspection.value_signing import UnsignedRedisRefused

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
KEY = SecretStr("a-long-random-signing-key")
PASSWORDS = {"REDIS_WORKER_PASSWORD": "worker-pw", "REDIS_REFERENCES_PASSWORD": "references-pw"}
WIDTH = 8


def compose_redis_args() -> list[str]:
    """The redis-server arguments of compose's redis service from the first `--user` on, passwords filled in."""
    command = COMPOSE["services"]["redis"]["command"][-1].split("exec ", 1)[1]
    for name, value in PASSWORDS.items():
        command = command.replace(f"$${name}", value)
    words = shlex.split(command)
    return words[words.index("--user") :]


def role_settings(server, user: str, password: str, **overrides) -> RedisSettings:
    url = SecretStr(f"redis://{server.host}:{server.port}/0")
    fields = dict(url=url, username=user, password=SecretStr(password), signing_key=KEY)
    return RedisSettings(**(fields | overrides))


@pytest.fixture
def server(redis_server_factory):
    """Compose's users; the default user is switched off once the server answered the fixture's PING."""
    args = compose_redis_args()
    assert args[:3] == ["--user", "default", "off"]
    started = redis_server_factory(password="admin-pw", extra_args=args[3:])
    redis.Redis(host=started.host, port=started.port, password="admin-pw").acl_setuser("default", enabled=False)
    return started


def test_compose_gives_each_role_the_generated_rules():
    args = " ".join(compose_redis_args())
    for role in ("worker", "references"):
        assert " ".join(acl_rules(role)) in args, role


def test_the_worker_user_keeps_embeddings_banks_and_pools_and_can_do_nothing_else(server):
    settings = role_settings(server, "linewatch-worker", "worker-pw")
    cache = RedisEmbeddingCache(settings)
    cache.expect({"clip-text": WIDTH})
    cache.put_many({"fp:clip-text:a": np.ones(WIDTH, np.float32)})
    assert cache.get_many(["fp:clip-text:a"])[0] is not None and not cache.degraded
    store, shape = open_store(settings), FeatureShape((3,), 4)
    assert store is not None
    store.put_bank("fp", "object:nut", "1", PatchBank(np.ones((1, 5, 4), np.float32), frames=2, layers=(3,)))
    assert store.get_bank("fp", "object:nut", "1", shape).patches == 5
    store.pool_push("fp", "object:nut", np.ones((1, 5, 4), np.float32), size=4)
    assert store.pool_read("fp", "object:nut", 4, 0, shape, [])[0] == 1
    client = redis.Redis(host=server.host, port=server.port, username="linewatch-worker", password="worker-pw")
    attacks = {
        "another prefix": lambda: client.hset("other:emb:x", "data", b"x"),
        "flushall": client.flushall,
        "config": lambda: client.config_get("*"),
        "keys": lambda: client.keys("*"),
        "a script": lambda: client.eval("return redis.call('del', KEYS[1])", 1, "linewatch:bank:fp"),
        "publish": lambda: client.publish("channel", "x"),
        "acl list": client.acl_list,
    }
    for name, attack in attacks.items():
        with pytest.raises(redis.exceptions.NoPermissionError):
            attack()
            pytest.fail(name)


def test_the_references_user_cannot_rewrite_embeddings_or_pools(server):
    """The attack: with a bank writer's credentials and the signing key, store a normal prompt's
    embedding under an anomalous prompt's key, re-signed."""
    worker = role_settings(server, "linewatch-worker", "worker-pw")
    RedisEmbeddingCache(worker).put_many({"fp:clip-text:anomalous": np.ones(WIDTH, np.float32)})
    references = role_settings(server, "linewatch-references", "references-pw")
    forger = RedisEmbeddingCache(references)
    forger.put_many({"fp:clip-text:anomalous": np.zeros(WIDTH, np.float32)})  # refused: a write error
    reader = RedisEmbeddingCache(worker)
    reader.expect({"clip-text": WIDTH})
    assert np.array_equal(reader.get_many(["fp:clip-text:anomalous"])[0], np.ones(WIDTH, np.float32))
    store = open_store(references)
    assert store is not None
    store.put_bank("fp", "object:nut", "1", PatchBank(np.ones((1, 5, 4), np.float32), frames=2, layers=(3,)))
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.pool_push("fp", "object:nut", np.zeros((1, 5, 4), np.float32), size=4)


def test_the_default_user_is_off(server):
    for password in (None, "admin-pw"):
        with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
            redis.Redis(host=server.host, port=server.port, password=password).ping()


def compose_worker_env(**dotenv: str) -> dict[str, str]:
    """The worker service's LINEWATCH_ environment as compose would pass it with this .env."""
    from tests.unit.test_docker_compose import interpolate

    values = PASSWORDS | dotenv
    env = {}
    for name, value in COMPOSE["services"]["worker"]["environment"].items():
        text = str(value)
        for var, setting in values.items():
            text = text.replace("${" + var + ":-}", setting).replace("${" + var + ":-false}", setting)
        env[name] = str(interpolate(text))
    return {k: v for k, v in env.items() if k.startswith("LINEWATCH_")}


def test_a_compose_worker_without_a_signing_key_does_not_start(server):
    env = compose_worker_env(REDIS_SIGNING_KEY="")
    env["LINEWATCH_REDIS__URL"] = f"redis://{server.host}:{server.port}/0"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    done = subprocess.run(
        [sys.executable, "-c", "from worker.cli import main; raise SystemExit(main(['serve']))"],
        env=clean | env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "LINEWATCH_REDIS__SIGNING_KEY" in done.stderr and "ALLOW_UNSIGNED" in done.stderr


def test_unsigned_values_only_with_the_loud_opt_out(server, caplog):
    refused = role_settings(server, "linewatch-worker", "worker-pw", signing_key=None, allow_unsigned=False)
    with pytest.raises(UnsignedRedisRefused):
        open_store(refused)
    allowed = refused.model_copy(update={"allow_unsigned": True})
    with caplog.at_level(logging.ERROR, logger="worker.inspection.value_signing"):
        assert open_store(allowed) is not None
    assert "UNSIGNED REDIS VALUES" in caplog.text
    assert compose_worker_env(REDIS_ALLOW_UNSIGNED="true")["LINEWATCH_REDIS__ALLOW_UNSIGNED"] == "true"
    assert compose_worker_env()["LINEWATCH_REDIS__ALLOW_UNSIGNED"] == "false"


def test_references_add_list_delete_work_as_the_references_user_and_the_worker_user_reads_the_bank(
    kafka_broker, server, tmp_path, capsys
):
    from tests.integration.test_references import SCOPE, A, add_references, fewshot_settings
    from worker.cli import build_parser
    from worker.stream.references_cli import run_references

    base = fewshot_settings(kafka_broker, f"redis://{server.host}:{server.port}/0")
    references = base.model_copy(update={"redis": role_settings(server, "linewatch-references", "references-pw")})
    add_references(references, tmp_path, A)
    capsys.readouterr()
    assert run_references(build_parser().parse_args(["references", "list"]), references) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["scope"] == SCOPE and listed["in_redis"]
    worker_store = open_store(role_settings(server, "linewatch-worker", "worker-pw"))
    assert worker_store is not None
    assert [b.scope for b in worker_store.list_banks()] == [SCOPE]  # what the workers load from
    assert run_references(build_parser().parse_args(["references", "delete", "--scope", SCOPE]), references) == 0
    assert json.loads(capsys.readouterr().out)["deleted_banks"] == 1 and worker_store.list_banks() == []


def test_a_worker_serves_as_the_worker_user_and_its_embeddings_are_signed(kafka_broker, server):
    from tests.integration.test_worker_service import good_frame, make_settings, publish_frames, read_results, running
    from worker.stream.service import WorkerService

    settings = make_settings(kafka_broker, None)
    worker_user = role_settings(server, "linewatch-worker", "worker-pw", allow_unsigned=False)
    settings = settings.model_copy(update={"redis": worker_user})
    service = WorkerService(settings)
    with running(service) as stop:
        sent = publish_frames(settings, [good_frame(i) for i in range(4)])
        assert {r.frame_id for r in read_results(settings, sent)} == sent
        stop()
    assert not service.cache.degraded and service.cache.stats().redis_errors == 0
    client = redis.Redis(host=server.host, port=server.port, username="linewatch-worker", password="worker-pw")
    stored = list(client.scan_iter(match="linewatch:emb:*"))
    assert stored and all(b"sig" in client.hgetall(key) for key in stored[:5])
