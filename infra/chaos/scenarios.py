"""The six fault scenarios of `make chaos`, each a function `(Infra) -> ChaosRow`.

Every scenario uses topics, a consumer group and a Redis prefix of its own, real worker
subprocesses (`linewatch-worker serve`, or infra/chaos/slow_worker.py where inference must be slow;
tiny models, foreground none), and counts what
reached the results and dead-letter topics by `frame_id`. A row's `recovery_s` is defined
per scenario in `RECOVERY`; `observations` holds what the scenario checks beyond the counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.chaos.harness import (
    PARTITIONS,
    SESSION_TIMEOUT_MS,
    Background,
    FrameSender,
    Infra,
    ProducerProcess,
    SentFrame,
    Tally,
    WorkerProcess,
    collect_outputs,
    first_result_after,
    frames_on_topic,
    redis_keys,
    results_count,
    scenario_settings,
    stopping,
    tally,
    wait_until,
)


@dataclass(frozen=True)
class ChaosRow:
    scenario: str
    tally: Tally
    recovery_s: float | None  # see RECOVERY[scenario]
    peak_rss_mb: float  # highest VmHWM among the scenario's worker processes
    observations: dict[str, Any]
    guarantee: str = "at-least-once"  # kafka.processing_guarantee the scenario ran under


RECOVERY = {
    "kill9-restart": "SIGKILL -> first result of a frame sent after it (restart, group re-join included)",
    "kill9-one-of-two": "SIGKILL -> first result of a frame sent after it on a partition the killed worker owned",
    "broker-restart": "broker answering again -> first result of a frame the producer sent while it was down",
    "redis-killed": "redis-server back -> the worker reports the cache healthy again",
    "slow-inference": "no fault: nothing to recover from",
    "burst-10x": "end of the burst -> last result (the backlog drained)",
}


def _peak(*workers: WorkerProcess) -> float:
    return round(max(worker.memory_mb() for worker in workers), 1)


def _ids(frames: list[SentFrame]) -> set[str]:
    return {frame.frame_id for frame in frames}


def _partitions(status: dict[str, Any]) -> set[int]:
    return {int(name.rsplit(":", 1)[1]) for name in status["assigned_partitions"]}


# ----------------------------------------------------------------------------- 1. kill -9 and restart


def kill9_restart(infra: Infra) -> ChaosRow:
    """SIGKILL the only worker while it infers a batch, start it again: every frame answered."""
    settings = scenario_settings(infra, "kill9-restart")
    first = WorkerProcess(settings, "worker-1", infra.log_dir, delay_s=0.3).start()
    second = WorkerProcess(settings, "worker-1", infra.log_dir, name="worker-1-restarted", delay_s=0.3)
    with FrameSender(settings) as sender, stopping(first, second):
        first.wait_assigned()
        stream = Background(lambda: sender.send(40, fps=5))
        at_kill = first.wait_for(
            lambda s: results_count(s) >= 6 and s["waiting_frames"] > 0, 60, "a batch in inference after some results"
        )
        peak = _peak(first)
        fault_at = time.time()
        first.kill()
        second.start()
        frames = stream.result(60)
        outputs = collect_outputs(settings, _ids(frames))
        peak = max(peak, _peak(second))
        second.stop()
    return ChaosRow(
        "kill9-restart",
        tally(len(frames), _ids(frames), outputs),
        first_result_after(outputs, frames, fault_at),
        peak,
        {
            "results_before_kill": results_count(at_kill),
            "frames_in_worker_at_kill": at_kill["waiting_frames"],
            "uncommitted_at_kill": at_kill["uncommitted_messages"],
        },
    )


# ----------------------------------------------------------------------------- 2. one of two killed


def kill9_one_of_two(infra: Infra) -> ChaosRow:
    """Two workers; SIGKILL one: the survivor takes its partitions after the session timeout."""
    settings = scenario_settings(infra, "kill9-one-of-two")
    victim = WorkerProcess(settings, "worker-a", infra.log_dir, delay_s=0.2).start()
    survivor = WorkerProcess(settings, "worker-b", infra.log_dir, delay_s=0.2).start()
    with FrameSender(settings) as sender, stopping(victim, survivor):
        survivor.wait_assigned(PARTITIONS // 2)
        victim.wait_assigned(PARTITIONS // 2)
        stream = Background(lambda: sender.send(40, fps=5))
        victim.wait_for(lambda s: results_count(s) >= 3, 60, "its first results")
        victim_status = victim.status()
        peak = _peak(victim)
        fault_at = time.time()
        victim.kill()
        survivor.wait_assigned(PARTITIONS, timeout_s=60)
        takeover_s = time.time() - fault_at
        frames = stream.result(60)
        outputs = collect_outputs(settings, _ids(frames))
        survivor_status = survivor.status()
        peak = max(peak, _peak(survivor))
        survivor.stop()
    return ChaosRow(
        "kill9-one-of-two",
        tally(len(frames), _ids(frames), outputs),
        first_result_after(outputs, frames, fault_at, partitions=_partitions(victim_status)),
        peak,
        {
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "takeover_s": round(takeover_s, 1),
            "uncommitted_at_kill": victim_status["uncommitted_messages"],
            "results_by_survivor": results_count(survivor_status),
            "survivor_rebalances": survivor_status["counters"].get("rebalances", 0),
        },
    )


# ----------------------------------------------------------------------------- 3. broker stopped


BROKER_DOWN_S = 5.0
PRODUCED_FRAMES = 60


def broker_restart(infra: Infra) -> ChaosRow:
    """SIGTERM the broker for a few seconds under a steady producer process; both reconnect by themselves."""
    settings = scenario_settings(infra, "broker-restart")
    worker = WorkerProcess(settings, "worker-1", infra.log_dir).start()
    producer = ProducerProcess(settings, infra.log_dir, count=PRODUCED_FRAMES, fps=4)
    with stopping(worker, producer):
        worker.wait_assigned()
        producer.start()
        before = worker.wait_for(lambda s: results_count(s) >= 4, 60, "results before the outage")
        fault_at = time.time()
        try:
            infra.broker.stop()
            down_at = time.time()
            time.sleep(BROKER_DOWN_S)
        finally:
            infra.broker.start()  # same port and data dir
        back_at = time.time()
        producer_exit = producer.wait(120)
        frames = frames_on_topic(settings, PRODUCED_FRAMES)
        outputs = collect_outputs(settings, _ids(frames))
        status = worker.wait_for(lambda s: s["broker_reachable"], 30, "the broker reachable again")
        peak = _peak(worker)
        worker.stop()
    return ChaosRow(
        "broker-restart",
        tally(PRODUCED_FRAMES, _ids(frames), outputs),
        first_result_after(outputs, frames, down_at, since=back_at),
        peak,
        {
            "broker_down_s": round(back_at - down_at, 1),
            "broker_stop_s": round(down_at - fault_at, 1),
            "producer_exit_code": producer_exit,
            "uncommitted_at_stop": before["uncommitted_messages"],
            "frames_on_topic": len(frames),
            "worker_rebalances": status["counters"].get("rebalances", 0),
        },
    )


# ----------------------------------------------------------------------------- 4. Redis killed


def redis_killed(infra: Infra) -> ChaosRow:
    """SIGKILL Redis under a running worker: results go on, the cache reports degraded, then recovers."""
    settings = scenario_settings(infra, "redis-killed")
    worker = WorkerProcess(settings, "worker-1", infra.log_dir).start()
    frames: list[SentFrame] = []

    def answered(count: int) -> Callable[[dict[str, Any]], bool]:
        return lambda status: results_count(status) >= count

    with FrameSender(settings) as sender, stopping(worker):
        try:
            worker.wait_assigned()
            frames += sender.send(8, object_name="washer")
            worker.wait_for(answered(8), 60, "results with Redis up")
            keys_before = redis_keys(infra, settings)
            infra.redis.kill()
            killed_at = time.time()
            worker.wait_for(lambda s: s["cache_degraded"], 30, "the cache reported degraded")
            degraded_after_s = time.time() - killed_at
            frames += sender.send(8, object_name="metal nut")  # prompts never seen: computed locally
            worker.wait_for(answered(16), 60, "results while Redis is down")
        finally:
            infra.redis.start()  # same port, empty (no persistence)
        back_at = time.time()
        worker.wait_for(lambda s: not s["cache_degraded"], 30, "the cache healthy again")
        recovery_s = time.time() - back_at
        keys_written_back = wait_until(lambda: redis_keys(infra, settings), 10, "the outage's embeddings in Redis")
        frames += sender.send(8, object_name="capsule")  # first seen after the recovery
        worker.wait_for(answered(24), 60, "results after the recovery")
        outputs = collect_outputs(settings, _ids(frames))
        keys_after = redis_keys(infra, settings)
        peak = _peak(worker)
        worker.stop()
    return ChaosRow(
        "redis-killed",
        tally(len(frames), _ids(frames), outputs),
        round(recovery_s, 1),
        peak,
        {
            "degraded_reported_after_s": round(degraded_after_s, 1),
            "redis_keys_before_kill": keys_before,
            "redis_keys_written_back": keys_written_back,
            "redis_keys_after_new_object": keys_after,
        },
    )


# ----------------------------------------------------------------------------- 5. slow inference


SLOW_BATCH_S = 3.0
SLOW_MAX_POLL_INTERVAL_MS = 2_000


def slow_inference(infra: Infra) -> ChaosRow:
    """Each batch takes longer than max.poll.interval.ms: no rebalance, nothing consumed twice."""
    settings = scenario_settings(infra, "slow-inference", max_poll_interval_ms=SLOW_MAX_POLL_INTERVAL_MS)
    worker = WorkerProcess(settings, "worker-1", infra.log_dir, delay_s=SLOW_BATCH_S).start()
    with FrameSender(settings) as sender, stopping(worker):
        joined = worker.wait_assigned()
        frames = sender.send(12)
        outputs = collect_outputs(settings, _ids(frames))
        status = worker.status()
        peak = _peak(worker)
        worker.stop()
    return ChaosRow(
        "slow-inference",
        tally(len(frames), _ids(frames), outputs),
        None,
        peak,
        {
            "batch_s": SLOW_BATCH_S,
            "max_poll_interval_ms": SLOW_MAX_POLL_INTERVAL_MS,
            "rebalances_at_join": joined["counters"].get("rebalances", 0),
            "rebalances_at_end": status["counters"].get("rebalances", 0),
            "consumed": status["counters"].get("consumed", 0),
            "batches": status["counters"].get("batches", 0),
        },
    )


# ----------------------------------------------------------------------------- 6. burst


BURST_FRAMES = 320  # 160 left too small a gap between a bounded intake's noise and an unbounded one
BURST_SIZE = (480, 640)  # decoded: 0.9 MiB a frame, so an unbounded intake would show in the RSS
BURST_QUEUE_MAX_FRAMES = 8
BURST_BATCH_DELAY_S = 0.1  # keeps scoring well under a tenth of the burst rate on a fast machine too
WARM_UP_FRAMES = 16  # a small burst: fills the queue and the batches as the big one does


def burst_10x(infra: Infra) -> ChaosRow:
    """A burst far above what the worker scores: partitions pause and resume, memory stays flat.

    The memory measure is the burst's peak RSS over the peak of a warm-up burst of 16 frames,
    which already fills the queue and full batches: with a bounded intake the big burst costs
    next to nothing more, an unbounded one would hold its whole backlog decoded.
    """
    settings = scenario_settings(infra, "burst-10x", batch_max_frames=2, queue_max_frames=BURST_QUEUE_MAX_FRAMES)
    height, width = BURST_SIZE
    worker = WorkerProcess(settings, "worker-1", infra.log_dir, delay_s=BURST_BATCH_DELAY_S).start()
    with FrameSender(settings, height=height, width=width) as sender, stopping(worker):
        worker.wait_assigned()
        start_up_peak = _peak(worker)
        worker.reset_peak_memory()  # from here VmHWM is the peak of the warm-up
        sender.send(WARM_UP_FRAMES)
        worker.wait_for(lambda s: results_count(s) >= WARM_UP_FRAMES, 60, "the warm-up frames")
        warm_up_peak = _peak(worker)
        worker.reset_peak_memory()  # and from here the peak of the burst
        started = time.time()
        burst = sender.send(BURST_FRAMES)
        burst_s = time.time() - started
        outputs = collect_outputs(settings, _ids(burst), timeout_s=180)
        status = worker.wait_for(lambda s: not s["paused"], 10, "the partitions resumed")
        burst_peak = _peak(worker)
        worker.stop()
    times = sorted(o.published_at for o in outputs.results if o.frame_id in _ids(burst))
    scoring_fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return ChaosRow(
        "burst-10x",
        tally(len(burst), _ids(burst), outputs),
        round(times[-1] - started - burst_s, 1) if times else None,
        max(start_up_peak, warm_up_peak, burst_peak),
        {
            "burst_fps": round(BURST_FRAMES / burst_s, 1),
            "scoring_fps": round(scoring_fps, 1),
            "pauses": status["counters"].get("pauses", 0),
            "rss_peak_warm_up_mb": warm_up_peak,
            "rss_peak_burst_mb": burst_peak,
            "burst_extra_mb": round(burst_peak - warm_up_peak, 1),
            "extra_backlog_decoded_mb": round((BURST_FRAMES - WARM_UP_FRAMES) * height * width * 3 / 2**20, 1),
        },
    )


SCENARIOS: dict[str, Callable[[Infra], ChaosRow]] = {
    "kill9-restart": kill9_restart,
    "kill9-one-of-two": kill9_one_of_two,
    "broker-restart": broker_restart,
    "redis-killed": redis_killed,
    "slow-inference": slow_inference,
    "burst-10x": burst_10x,
}
