"""Drift-free rate control, with a fake clock (and one short real-time check)."""

from __future__ import annotations

import threading
import time

import pytest

from producer.rate import RateLimiter


class FakeClock:
    def __init__(self, oversleep: float = 0.0):
        self.now = 100.0
        self.oversleep = oversleep
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep


def test_zero_fps_never_sleeps():
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    assert all(limiter.wait() for _ in range(100))
    assert clock.sleeps == []


def test_schedule_does_not_drift_despite_oversleep_and_work():
    clock = FakeClock(oversleep=0.003)  # every sleep wakes 3 ms late
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)  # period 20 ms
    start = clock.now
    sends = []
    for _ in range(500):
        limiter.wait()
        sends.append(clock.now)
        clock.now += 0.004  # per-frame work
    # Frame n goes out at start + n/fps + 3 ms at most: errors do not accumulate.
    for n, t in enumerate(sends):
        assert start + n * 0.02 - 1e-9 <= t <= start + n * 0.02 + 0.0031
    # A naive "sleep one period after each frame" would be 500 * 7 ms = 3.5 s late by now.
    assert sends[-1] - start == pytest.approx(499 * 0.02, abs=0.004)


def test_catches_up_after_a_short_stall_without_sleeping():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.wait()
    clock.now += 0.35  # a stall of 3.5 periods
    sleeps_before = len(clock.sleeps)
    for _ in range(3):  # frames 1..3 are overdue: sent at once
        limiter.wait()
    assert len(clock.sleeps) == sleeps_before
    limiter.wait()  # frame 4 is due at +0.4
    assert clock.now == pytest.approx(100.4)
    assert limiter.resets == 0


def test_reanchors_instead_of_bursting_after_a_long_stall():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, max_burst_s=1.0)
    limiter.wait()
    clock.now += 5.0
    limiter.wait()  # would be 49 frames behind: new schedule from now
    assert limiter.resets == 1
    t0 = clock.now
    limiter.wait()
    assert clock.now == pytest.approx(t0 + 0.1)


def test_ready_drops_early_frames_of_a_live_source():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    accepted = 0
    for _ in range(300):  # a 30 fps camera for 10 s
        accepted += limiter.ready()
        clock.now += 1 / 30
    assert 99 <= accepted <= 101
    assert clock.sleeps == []


def test_stop_event_interrupts_the_wait():
    stop = threading.Event()
    limiter = RateLimiter(0.5, stop=stop)  # one frame every 2 s
    assert limiter.wait()  # first frame is due at once
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert limiter.wait() is False
    assert time.monotonic() - started < 1.0


def test_real_clock_rate():
    limiter = RateLimiter(100)
    started = time.monotonic()
    for _ in range(21):
        limiter.wait()
    assert 0.19 <= time.monotonic() - started < 0.6


def test_negative_fps_is_rejected():
    with pytest.raises(ValueError):
        RateLimiter(-1)
