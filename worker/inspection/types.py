"""Typed containers that go in and out of `Inspector.inspect`.

Kept apart from the Inspector so that the service, the CLI and the evaluation
harness can depend on them without importing any model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from common.schemas import Versions
    from worker.inspection.fewshot.context import FewShotContext


@dataclass(frozen=True)
class Frame:
    """One decoded frame to inspect.

    image: (H, W, 3) uint8 RGB.
    object_name: the product as named in prompts ("screw", "printed circuit board").
    """

    frame_id: str
    image: np.ndarray
    object_name: str
    # prompt overrides of the control record in force: states added to the ensemble for this frame
    extra_normal_states: tuple[str, ...] = ()
    extra_anomalous_states: tuple[str, ...] = ()
    # few-shot: the reference bank and/or rolling pool of the frame's scope (a FewShotContext; None: zero-shot only)
    few_shot: FewShotContext | None = field(default=None, compare=False)

    @property
    def prompt_key(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """Frames with the same key share one prompt ensemble."""
        return self.object_name, self.extra_normal_states, self.extra_anomalous_states


@dataclass(frozen=True)
class InstanceScore:
    """A foreground component: its bounding box (x, y, w, h), pixel area, mean tile score and tile count."""

    box: tuple[int, int, int, int]
    area: int
    score: float
    tiles: int


@dataclass(frozen=True)
class Inspection:
    """What the Inspector says about one frame.

    score: image anomaly score in [0, 1].
    anomaly_map: (H, W) float32 in [0, 1] at frame resolution.
    foreground: (H, W) bool, the foreground the tiles were cut from.
    timings_ms: this frame's share of each stage's time.
    """

    frame_id: str
    score: float
    anomaly_map: np.ndarray
    foreground: np.ndarray
    instances: list[InstanceScore] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


class InspectorProtocol(Protocol):
    """What the stream worker needs of an Inspector (the real one, or a test's wrapper)."""

    @property
    def versions(self) -> Versions: ...

    def inspect(self, frames: Sequence[Frame]) -> list[Inspection]: ...
