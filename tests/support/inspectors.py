"""The real Inspector behind a test's own `inspect`: how tests make inference slow, failing or stuck.

Production code has no test hook for this (there is no delay setting): a test builds the real
Inspector and wraps it. `DelayedInspector` is the one the chaos worker subprocesses run
(infra/chaos/slow_worker.py); it is re-exported here for the in-process tests.

    from worker.inspection.inspector import build_inspector
    from worker.inspection.redis_cache import build_embedding_cache

    cache = build_embedding_cache(settings.redis)
    slow = DelayedInspector(build_inspector(settings.models, cache=cache), delay_s=0.2)
    service = WorkerService(settings, slow, cache=cache)   # or: slow_worker_service(settings, 0.2)
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


def slow_worker_service(settings, delay_s: float, **kwargs):
    """A `WorkerService` whose real Inspector sleeps `delay_s` after every batch (what the removed
    `models.inject_delay_s` setting did), with the embedding cache the service would build itself."""
    from worker.inspection.inspector import build_inspector
    from worker.inspection.redis_cache import build_embedding_cache
    from worker.stream.service import WorkerService

    cache = build_embedding_cache(settings.redis)
    inspector = DelayedInspector(build_inspector(settings.models, cache=cache), delay_s)
    return WorkerService(settings, inspector, cache=cache, **kwargs)
