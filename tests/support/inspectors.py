"""The real Inspector behind a test's own `inspect`: how tests make inference slow, failing or stuck.

Production code has no test hook for this (there is no delay setting): a test builds the real
Inspector and wraps it. `DelayedInspector` is the one the chaos worker subprocesses run
(infra/chaos/slow_worker.py); it is re-exported here for the in-process tests.

    from worker.inspection.inspector import build_inspector
    from worker.inspection.redis_cache import build_embedding_cache

    cache = build_embedding_cache(settings.redis)
    slow = DelayedInspector(build_inspector(settings.models, cache=cache), delay_s=0.2)
    service = WorkerService(settings, slow, cache=cache)
"""

from __future__ import annotations

from infra.chaos.slow_worker import DelayedInspector

__all__ = ["DelayedInspector", "WrappedInspector"]


class WrappedInspector:
    """The real tiny Inspector behind a test's own `inspect` (the service needs only these two members)."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def versions(self):
        return self.inner.versions

    def inspect(self, frames):
        return self.inner.inspect(frames)
