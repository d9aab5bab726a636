"""Chaos scenarios of hard crashes: the broker SIGKILLed under load, a worker SIGKILLed mid-transaction.

Like the scenarios of `scenarios.py` they run under the `Infra`'s processing guarantee; the report runs
each under both. Duplicates are counted by a `read_committed` reader over `frame_id`s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from infra.chaos.harness import (
    Background,
    FrameSender,
    Infra,
    ProducerProcess,
    WorkerProcess,
    collect_outputs,
    first_result_after,
    frames_on_topic,
    results_count,
    scenario_settings,
    stopping,
    tally,
)
from infra.chaos.scenarios import BROKER_DOWN_S, PRODUCED_FRAMES, ChaosRow, _ids, _peak

RECOVERY = {
    "broker-kill9": "broker answering again -> first result of a frame the producer sent while it was down",
    "kill9-mid-transaction": "SIGKILL -> first result of a frame sent after it (restart, fencing, re-join included)",
}

COMMIT_DELAY_S = 3.0  # exactly-once: how long each transaction stays open after its results were sent


def broker_kill9(infra: Infra) -> ChaosRow:
    """SIGKILL the broker under a steady producer process, start it again: no clean shutdown, no flush."""
    settings = scenario_settings(infra, "broker-kill9")
    worker = WorkerProcess(settings, "worker-1", infra.log_dir).start()
    producer = ProducerProcess(settings, infra.log_dir, count=PRODUCED_FRAMES, fps=4)
    with stopping(worker, producer):
        worker.wait_assigned()
        producer.start()
        before = worker.wait_for(lambda s: results_count(s) >= 4, 60, "results before the crash")
        try:
            infra.broker.kill()
            down_at = time.time()
            time.sleep(BROKER_DOWN_S)
        finally:
            infra.broker.start()  # same port and data dir: it recovers its logs
        back_at = time.time()
        producer_exit = producer.wait(180)
        frames = frames_on_topic(settings, PRODUCED_FRAMES)
        outputs = collect_outputs(settings, _ids(frames), timeout_s=180)
        status = worker.wait_for(lambda s: s["broker_reachable"], 60, "the broker reachable again")
        peak = _peak(worker)
        worker.stop()
    return ChaosRow(
        "broker-kill9",
        tally(PRODUCED_FRAMES, _ids(frames), outputs),
        first_result_after(outputs, frames, down_at, since=back_at),
        peak,
        {
            "broker_down_s": round(back_at - down_at, 1),
            "producer_exit_code": producer_exit,
            "uncommitted_at_crash": before["uncommitted_messages"],
            "frames_on_topic": len(frames),
            "worker_resyncs": status["counters"].get("resyncs", 0),
            "aborted_transactions": status["counters"].get("aborted_transactions", 0),
        },
    )


def kill9_mid_transaction(infra: Infra) -> ChaosRow:
    """SIGKILL the only worker while its results are sent and not committed, restart it with the same id.

    Every transaction of the first worker waits COMMIT_DELAY_S before it commits (exactly-once), so the
    kill lands between sending and committing; under at-least-once the same window sits between the
    acknowledgements and the offset commit."""
    settings = scenario_settings(infra, "kill9-mid-transaction", commit_interval_ms=200)
    first = WorkerProcess(settings, "worker-1", infra.log_dir, delay_s=0.1, commit_delay_s=COMMIT_DELAY_S).start()
    second = WorkerProcess(settings, "worker-1", infra.log_dir, name="worker-1-restarted", delay_s=0.1)
    with FrameSender(settings) as sender, stopping(first, second):
        first.wait_assigned()
        stream = Background(lambda: sender.send(40, fps=5))
        at_kill = first.wait_for(
            lambda s: s["uncommitted_messages"] > 0 and s["counters"].get("checkpoints", 0) >= 1,
            90,
            "results sent and not committed, after a first checkpoint",
        )
        peak = _peak(first)
        fault_at = time.time()
        first.kill()
        second.start()
        frames = stream.result(90)
        outputs = collect_outputs(settings, _ids(frames), timeout_s=180)
        peak = max(peak, _peak(second))
        second.stop()
    return ChaosRow(
        "kill9-mid-transaction",
        tally(len(frames), _ids(frames), outputs),
        first_result_after(outputs, frames, fault_at),
        peak,
        {
            "checkpoints_before_kill": at_kill["counters"].get("checkpoints", 0),
            "uncommitted_at_kill": at_kill["uncommitted_messages"],
        },
    )


CRASH_SCENARIOS: dict[str, Callable[[Infra], ChaosRow]] = {
    "broker-kill9": broker_kill9,
    "kill9-mid-transaction": kill9_mid_transaction,
}
