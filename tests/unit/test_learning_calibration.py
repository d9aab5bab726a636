"""Learning mode and `calibrate` are one calibration: the same normal frames give the same record.

The same inspections go once through `calibrate`'s path (`score_normal_frames` ->
`calibration_record`) and once through the stream worker's (`Judge.judge` of a scope in learning
-> the calibrated record it sends to the control topic); the thresholds must be identical, the pixel
one rounded for the float32 anomaly maps it is compared with.
"""

from __future__ import annotations

import numpy as np
from opentelemetry.metrics import NoOpMeter

from common.control import ControlRecord, Learning, PromptOverrides, answers_learning
from common.control_topic import encode_control
from common.metrics import Metrics
from common.schemas import Versions
from common.settings import WorkerSettings
from worker.calibration.record import calibration_record
from worker.calibration.scoring import NormalFrame, score_normal_frames
from worker.inspection.types import Frame, Inspection
from worker.stream.control import ControlState
from worker.stream.judging import Judge
from worker.stream.telemetry import Counters

SCOPE, CAMERA, OBJECT = "object:nut", "cam-1", "nut"
N, TARGET_FPR = 20, 0.1


def inspections() -> list[Inspection]:
    """Normal frames' inspections: float32 maps, a foreground square, one frame without foreground."""
    rng = np.random.default_rng(11)
    found = []
    for i in range(N):
        anomaly_map = rng.uniform(0.0, 0.8, (16, 16)).astype(np.float32)
        foreground = np.zeros((16, 16), bool)
        if i != 3:  # nothing salient: the whole map counts, in both paths
            foreground[4:12, 4:12] = True
        found.append(Inspection(f"f{i}", float(rng.uniform(0.1, 0.5)), anomaly_map, foreground))
    return found


class ReplayInspector:
    """Hands back prepared inspections in order (the models are not what is compared here)."""

    def __init__(self, prepared: list[Inspection]) -> None:
        self.prepared = list(prepared)

    @property
    def versions(self) -> Versions:  # pragma: no cover - not read by score_normal_frames
        raise NotImplementedError

    def inspect(self, frames: list[Frame]) -> list[Inspection]:
        taken, self.prepared = self.prepared[: len(frames)], self.prepared[len(frames) :]
        return taken


def learning_mode_record(prepared: list[Inspection], learning: ControlRecord) -> ControlRecord:
    state = ControlState(WorkerSettings(worker_id="w1"), Counters(), Metrics.create(NoOpMeter("test")))
    assert state.apply_message(SCOPE.encode(), encode_control(learning)) == "applied"
    sent: list[tuple[str, ControlRecord]] = []
    judge = Judge(
        state,
        lambda scope, record: sent.append((scope, record)),
        worker_id="w1",
        counters=Counters(),
        metrics=Metrics.create(NoOpMeter("test")),
    )
    for inspection in prepared:
        _, calibrating = judge.judge(state.resolve(CAMERA, OBJECT), inspection)
        assert calibrating
    assert [scope for scope, _ in sent] == [SCOPE]
    return sent[0][1]


def test_learning_mode_and_calibrate_give_the_identical_record_from_the_same_frames():
    prepared = inspections()
    learning = ControlRecord(
        version=4,
        learning=Learning(frames=N, target_fpr=TARGET_FPR),
        prompts=PromptOverrides(extra_anomalous_states=("rusty {}",)),
    )
    learned = learning_mode_record(prepared, learning)

    frames = [NormalFrame(f"f{i}", np.zeros((16, 16, 3), np.uint8), OBJECT) for i in range(N)]
    scores = score_normal_frames(ReplayInspector(prepared), frames, progress=False)
    calibrated = calibration_record(
        scores.raw, scores.pixel, target_fpr=TARGET_FPR, by="worker:w1", version=5, base=learning
    )

    assert learned.image_threshold == calibrated.image_threshold
    assert learned.pixel_threshold == calibrated.pixel_threshold
    assert learned.calibration.model_dump(exclude={"calibrated_at"}) == calibrated.calibration.model_dump(
        exclude={"calibrated_at"}
    )
    # the learned record answers the learning record: every other field as it was (learning included)
    assert answers_learning(learning, learned) and learned.version == calibrated.version == 5

    # Rounded for the float32 map: the frame whose maximum sets the bound is not flagged by it (a
    # float64 step above that maximum rounds back onto it when numpy compares it with a float32 map).
    maxima = np.sort(np.asarray(scores.pixel, np.float32))
    kth = maxima[int(np.ceil((N + 1) * (1 - TARGET_FPR))) - 1]
    bound_map = next(i.anomaly_map for i in prepared if (i.anomaly_map * i.foreground).max() == kth)
    assert not (bound_map >= learned.pixel_threshold).any()
    assert (maxima >= np.float32(learned.pixel_threshold)).sum() == N - int(np.ceil((N + 1) * (1 - TARGET_FPR)))
