"""Gaps in a camera's frame counter: frames lost between the sensor and the producer.

GigE Vision cameras number their frames (the GVSP block id); GigE Vision 1.x counts with 16 bits
and skips 0 when it wraps (65535 -> 1). A jump forward is a gap; a counter that falls back far
from its wrap point means the camera restarted (counted as a reset, not as lost frames).
"""

from __future__ import annotations

from dataclasses import dataclass

GIGE_VISION_COUNTER_MAX = 65535


@dataclass(frozen=True)
class CounterStep:
    """What one counter value says: frames missed since the previous one, or a reset."""

    missed: int = 0
    reset: bool = False
    repeated: bool = False


def counter_step(previous: int | None, current: int, *, wrap_at: int = GIGE_VISION_COUNTER_MAX) -> CounterStep:
    """Compare a frame counter with the previous one (pure). `wrap_at`: the counter's largest value."""
    if previous is None:
        return CounterStep()
    if current == previous:
        return CounterStep(repeated=True)
    if current > previous:
        return CounterStep(missed=current - previous - 1)
    # fell back: a wrap when it was near the top and restarts near the bottom, else a camera restart
    if previous > wrap_at - wrap_at // 4 and current < wrap_at // 4:
        return CounterStep(missed=(wrap_at - previous) + (current - 1))
    return CounterStep(reset=True)


class FrameCounterWatch:
    """Remembers the last counter per camera and adds up the gaps."""

    def __init__(self, *, wrap_at: int = GIGE_VISION_COUNTER_MAX) -> None:
        self.wrap_at = wrap_at
        self.last: int | None = None
        self.missed = 0
        self.gaps = 0
        self.resets = 0

    def observe(self, counter: int) -> CounterStep:
        step = counter_step(self.last, counter, wrap_at=self.wrap_at)
        self.last = counter
        if step.missed:
            self.gaps += 1
            self.missed += step.missed
        if step.reset:
            self.resets += 1
        return step
