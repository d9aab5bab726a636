"""`linewatch-worker serve` with slow inference, for the chaos scenarios that need a batch in flight.

    python -m infra.chaos.slow_worker --delay-s 0.3      # settings from LINEWATCH_* as for `serve`

It builds the real Inspector (with the same embedding cache `serve` builds), wraps it in a
`DelayedInspector` that sleeps `delay_s` after every batch, and hands it to
`worker.stream.service.run_service`. Production code has no delay hook: slowness is the
wrapper's, here and in the in-process tests (tests/support/inspectors.py re-exports it).

Difference from `serve`: the service is handed a ready Inspector, so it does not own the
cache (its status reports `cache_degraded` False). No scenario that uses this module checks it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any


class DelayedInspector:
    """The real Inspector, then `delay_s` of sleep per `inspect` call (a slow device).

    The service needs only `versions` and `inspect`; the sleep comes after the real work,
    as a slow model would hold the batch.
    """

    def __init__(self, inner: Any, delay_s: float):
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.inner = inner
        self.delay_s = delay_s

    @property
    def versions(self) -> Any:
        return self.inner.versions

    def inspect(self, frames: Sequence[Any]) -> list[Any]:
        inspections = self.inner.inspect(frames)
        time.sleep(self.delay_s)
        return inspections


def delay_commits(delay_s: float) -> None:
    """Every transaction of this process waits `delay_s` before it commits: its records are on the
    broker, not yet visible to `read_committed` readers (what a worker killed mid-transaction leaves)."""
    from kafka import KafkaProducer

    commit = KafkaProducer.commit_transaction

    def delayed_commit(self: KafkaProducer) -> None:
        time.sleep(delay_s)
        commit(self)

    KafkaProducer.commit_transaction = delayed_commit  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.chaos.slow_worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-s", type=float, required=True, help="seconds of sleep after every batch")
    parser.add_argument(
        "--commit-delay-s",
        type=float,
        default=0.0,
        help="exactly-once: seconds of sleep before each transaction commits (a window to kill the worker in)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    from common.settings import LinewatchSettings
    from worker.inspection.inspector import build_inspector
    from worker.inspection.redis_cache import build_embedding_cache
    from worker.stream.service import InferenceStuck, run_service

    if args.commit_delay_s > 0:
        delay_commits(args.commit_delay_s)
    settings = LinewatchSettings()
    cache = build_embedding_cache(settings.redis)
    inspector = DelayedInspector(build_inspector(settings.models, cache=cache), args.delay_s)
    try:
        run_service(settings, inspector)
    except InferenceStuck as exc:  # as `linewatch-worker serve`
        print(f"slow_worker: {exc}; exiting", file=sys.stderr)
        return 3
    finally:
        if hasattr(cache, "close"):
            cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
