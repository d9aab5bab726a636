"""Components that never use Redis say so when they are given its password or signing key."""

from __future__ import annotations

import logging
import os

import pytest
from pydantic import SecretStr

from common.redis_acl import acl_file, warn_if_given_redis_secrets
from common.settings import RedisSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("LINEWATCH_")]:
        monkeypatch.delenv(key)


def test_the_alarm_service_warns_when_given_the_signing_key(monkeypatch, caplog):
    from worker.alarms.cli import main

    monkeypatch.setenv("LINEWATCH_REDIS__SIGNING_KEY", "a-long-random-signing-key")
    with caplog.at_level(logging.WARNING, logger="common.redis_acl"):
        assert main([]) == 2  # no rules file: it stops right after reading its settings
    assert "the alarm service does not use Redis but was given LINEWATCH_REDIS__SIGNING_KEY" in caplog.text
    assert "a-long-random-signing-key" not in caplog.text


def test_only_secrets_count():
    assert not warn_if_given_redis_secrets(RedisSettings(), "x")  # the default URL holds no password
    assert warn_if_given_redis_secrets(RedisSettings(url=SecretStr("redis://:pw@cache:6379/0")), "x")
    assert warn_if_given_redis_secrets(RedisSettings(password=SecretStr("pw")), "x")


def test_the_acl_file_has_the_default_user_off_and_one_user_per_role():
    lines = acl_file({"worker": "w", "references": "r"}, prefix="plant7").splitlines()
    assert lines[0] == "user default off"
    assert lines[1].startswith(
        "user linewatch-worker on >w ~plant7:emb:* ~plant7:bank:* ~plant7:pool:* resetchannels -@all"
    )
    assert lines[2].startswith("user linewatch-references on >r ~plant7:bank:* resetchannels -@all")
    assert "+flushall" not in lines[1] and "+incrby" not in lines[2]
