"""Unique, legal Kafka topic names per test (the `topic_names` fixture of tests/conftest.py)."""

from __future__ import annotations

import re
import uuid


class TopicNames:
    """Unique, legal Kafka topic names for one test: ``names("frames")`` -> "t-test_x-frames-1a2b3c4d"."""

    _illegal = re.compile(r"[^a-zA-Z0-9._-]+")

    def __init__(self, test_name: str) -> None:
        slug = self._illegal.sub("-", test_name).strip("-.") or "test"
        self.prefix = f"t-{slug[:80]}"
        self.issued: list[str] = []

    def __call__(self, suffix: str = "topic") -> str:
        suffix = self._illegal.sub("-", suffix).strip("-.") or "topic"
        name = f"{self.prefix}-{suffix[:80]}-{uuid.uuid4().hex[:8]}"
        self.issued.append(name)
        return name
