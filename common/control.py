"""Control and feedback contracts (DESIGN.md: "Control record", "Feedback").

`linewatch.control` is compacted and keyed by scope; its values are `ControlRecord` JSON
(a tombstone deletes a scope). The most specific scope that has a record wins:
`camera:<id>/object:<name>`, then `camera:<id>`, then `object:<name>`.

`linewatch.feedback` (key = camera id) carries `FeedbackRecord` JSON: a person's label on a result.

Scores: the Inspector's `raw_score` is not calibrated; `normalised_score` maps it piecewise
linearly so that the threshold in force lands on 0.5 (0 stays 0, 1 stays 1), which lets
dashboards and alarm rules span products.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from common.calibration import frames_needed
from common.schemas import SourceRef, utc_now

CONTROL_SCHEMA_VERSION = 1
FEEDBACK_SCHEMA_VERSION = 1

_CAMERA = "camera:"
_OBJECT = "object:"

FeedbackLabel = Literal["false_alarm", "defect", "good_reference"]

# Bounds on what a control record may say (a record beyond them is refused, `out_of_bounds`).
# Camera ids: letters, digits, `.`, `_`, `-` (they are Kafka keys and metric labels; no `/` or `:`
# that would make a scope key ambiguous). Object names: the same plus inner spaces ("metal nut").
CAMERA_ID = re.compile(r"[\w.-]{1,128}")
OBJECT_NAME = re.compile(r"\w(?:[\w .-]{0,98}[\w.-])?")
MAX_LEARNING_FRAMES = 10_000  # frames one learning session collects at most (the conformal bound's n)
MAX_EXTRA_STATES = 16  # extra normal / anomalous states per record
MAX_STATE_CHARS = 120  # one state template ("a photo of a {} with a crack"); CLIP reads 77 tokens
ObjectName = Annotated[str, StringConstraints(pattern=OBJECT_NAME.pattern.join("^$"))]
StateTemplate = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STATE_CHARS)]
Who = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- scopes


def scope_key(camera_id: str | None = None, object_name: str | None = None) -> str:
    """The control-topic key of a scope: `camera:<id>/object:<name>`, `camera:<id>` or `object:<name>`."""
    if camera_id and object_name:
        return f"{_CAMERA}{camera_id}/{_OBJECT}{object_name}"
    if camera_id:
        return f"{_CAMERA}{camera_id}"
    if object_name:
        return f"{_OBJECT}{object_name}"
    raise ValueError("a scope needs a camera id, an object name or both")


def parse_scope(key: str) -> tuple[str | None, str | None]:
    """(camera id, object name) of a scope key; ValueError when it is not one, or when its camera id
    or object name is outside the charset and length a scope may name (CAMERA_ID, OBJECT_NAME)."""
    camera, obj = _split_scope(key)
    if camera is not None and not CAMERA_ID.fullmatch(camera):
        raise ValueError(f"camera id {camera[:140]!r}: up to 128 letters, digits, '.', '_' or '-'")
    if obj is not None and not OBJECT_NAME.fullmatch(obj):
        raise ValueError(f"object name {obj[:140]!r}: up to 100 letters, digits, inner spaces, '.', '_' or '-'")
    return camera, obj


def _split_scope(key: str) -> tuple[str | None, str | None]:
    camera, joined, obj = key.partition("/" + _OBJECT)
    if joined:
        if camera.startswith(_CAMERA) and len(camera) > len(_CAMERA) and obj:
            return camera[len(_CAMERA) :], obj
    elif key.startswith(_CAMERA) and len(key) > len(_CAMERA):
        return key[len(_CAMERA) :], None
    elif key.startswith(_OBJECT) and len(key) > len(_OBJECT):
        return None, key[len(_OBJECT) :]
    raise ValueError(f"not a control scope: {key!r} (expected object:<name>, camera:<id> or camera:<id>/object:<name>)")


def candidate_scopes(camera_id: str, object_name: str) -> tuple[str, str, str]:
    """The scopes that apply to a frame, most specific first."""
    return scope_key(camera_id, object_name), scope_key(camera_id), scope_key(object_name=object_name)


# --------------------------------------------------------------------------- control record


class Calibration(_Record):
    """How the thresholds of a record were obtained (from normal frames only)."""

    method: Literal["conformal"] = "conformal"
    n: int = Field(ge=1, description="normal frames scored")
    target_fpr: float = Field(gt=0.0, lt=1.0, description="false-alarm rate the image threshold bounds")
    quantiles: dict[Annotated[str, StringConstraints(max_length=16)], float] = Field(
        default_factory=dict, max_length=16, description="raw normal scores, e.g. p50, p90, p99, max"
    )
    pixel_n: int | None = Field(None, ge=1, description="normal pixel scores behind the pixel threshold")
    calibrated_at: datetime = Field(default_factory=utc_now)
    by: Who = Field(description="who or what calibrated: a user name, or worker:<id> in learning mode")


class PromptOverrides(_Record):
    object_name: ObjectName | None = Field(None, description="name used in prompts")
    extra_normal_states: tuple[StateTemplate, ...] = Field((), max_length=MAX_EXTRA_STATES)
    extra_anomalous_states: tuple[StateTemplate, ...] = Field((), max_length=MAX_EXTRA_STATES)


class ReferenceSet(_Record):
    """The reference bank in force for the scope: in Redis under (model fingerprint, scope, version)."""

    version: str = Field(min_length=1, max_length=64)
    frames: int = Field(0, ge=0)
    patches: int = Field(0, ge=0)
    model_fingerprint: str | None = Field(
        None, max_length=128, description="the model whose patch features the bank holds"
    )


class Learning(_Record):
    """Learning mode: the first `frames` frames of the scope get verdict `calibrating`, then the
    worker calibrates at `target_fpr` and publishes the record itself. A session collects at most
    MAX_LEARNING_FRAMES frames: `frames`, or more where the conformal bound at `target_fpr` needs more."""

    frames: int = Field(ge=2, le=MAX_LEARNING_FRAMES)
    target_fpr: float = Field(gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _bounded(self) -> Learning:
        needed = frames_needed(self.target_fpr) if self.target_fpr >= 1.0 / (MAX_LEARNING_FRAMES + 2) else None
        if needed is None or needed > MAX_LEARNING_FRAMES:
            raise ValueError(
                f"target_fpr {self.target_fpr:g} needs more than {MAX_LEARNING_FRAMES} learning frames (the most a session collects)"
            )
        return self


class ControlRecord(_Record):
    """Value of a `linewatch.control` message (key = scope)."""

    schema_version: Literal[1] = CONTROL_SCHEMA_VERSION
    version: int = Field(ge=1, description="increases with every change of the scope's record")
    image_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="raw image score at or above which a frame is anomalous"
    )
    pixel_threshold: float | None = Field(None, ge=0.0, le=1.0, description="anomaly-map level of the defect mask")
    calibration: Calibration | None = None
    prompts: PromptOverrides | None = None
    references: ReferenceSet | None = None
    learning: Learning | None = None
    updated_at: datetime = Field(default_factory=utc_now)
    updated_by: Who = "unknown"

    @field_validator("updated_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("updated_at must carry a timezone (use UTC)")
        return value


def in_learning(record: ControlRecord | None) -> bool:
    """Whether `record` puts its scope in learning mode (learning set, no image threshold yet)."""
    return record is not None and record.learning is not None and record.image_threshold is None


def frames_to_learn(learning: Learning) -> int:
    """How many frames a learning session collects: `frames`, at least what the conformal bound needs."""
    return max(learning.frames, frames_needed(learning.target_fpr))


# What a worker's calibrated record may change of the learning record it answers.
LEARNED_FIELDS = frozenset({"version", "image_threshold", "pixel_threshold", "calibration", "updated_at", "updated_by"})
# The highest threshold a learned record may set: a worker account cannot switch a scope's verdicts
# off by learning a threshold no score reaches. Only an operator writes a higher one.
MAX_LEARNED_THRESHOLD = 0.99


def learned_out_of_bounds(learned: ControlRecord) -> str | None:
    """What is wrong with a learned record on its own (None: nothing): thresholds and calibration
    set, thresholds at most MAX_LEARNED_THRESHOLD."""
    if learned.image_threshold is None or learned.calibration is None:
        return "a learned record sets image_threshold and calibration"
    for name in ("image_threshold", "pixel_threshold"):
        value = getattr(learned, name)
        if value is not None and value > MAX_LEARNED_THRESHOLD:
            return f"learned {name} {value:g} is above {MAX_LEARNED_THRESHOLD:g} (only an operator sets one that high)"
    return None


def answers_learning(learning: ControlRecord, learned: ControlRecord) -> bool:
    """Whether `learned` (from the learned-records topic) is a calibration of `learning`: its next
    version, within bounds, calibrated at the session's `target_fpr` from at least as many frames
    as the session collects, and every other field as it was."""
    if not in_learning(learning) or learned.version != learning.version + 1:
        return False
    if learned_out_of_bounds(learned) is not None:
        return False
    assert learning.learning is not None and learned.calibration is not None
    calibration = learned.calibration
    if calibration.target_fpr != learning.learning.target_fpr or calibration.n < frames_to_learn(learning.learning):
        return False
    return learning.model_dump(exclude=LEARNED_FIELDS) == learned.model_dump(exclude=LEARNED_FIELDS)


def threshold_version(scope: str, record: ControlRecord) -> str:
    """What results carry in `versions.threshold_version` when `record` of `scope` is in force."""
    return f"{scope}@v{record.version}"


def normalised_score(raw: float, threshold: float) -> float:
    """`raw` mapped piecewise linearly so that `threshold` -> 0.5, 0 -> 0 and 1 -> 1."""
    raw = min(1.0, max(0.0, raw))
    if threshold <= 0.0:
        return 1.0 if raw > 0.0 else 0.5
    if threshold >= 1.0:
        return 0.5 * raw
    if raw < threshold:
        return 0.5 * raw / threshold
    return 0.5 + 0.5 * (raw - threshold) / (1.0 - threshold)


# --------------------------------------------------------------------------- feedback


class FeedbackRecord(_Record):
    """Value of a `linewatch.feedback` message (key = camera id): a person's label on a result."""

    schema_version: Literal[1] = FEEDBACK_SCHEMA_VERSION
    frame_id: str = Field(min_length=1, max_length=128)
    camera_id: str = Field(min_length=1, max_length=128)
    object_name: str = Field(min_length=1, max_length=100)
    label: FeedbackLabel
    by: str = Field(min_length=1, max_length=128)
    at: datetime = Field(default_factory=utc_now)
    raw_score: float | None = Field(None, ge=0.0, le=1.0, description="the result's raw score, when known")
    source: SourceRef | None = Field(None, description="where the frame is on the frames topic, when known")
    note: str | None = Field(None, max_length=2000)


# --------------------------------------------------------------------------- thresholds in force


class ThresholdsInForce(_Record):
    """What decides a frame's verdict and defect mask, and the label results carry for it."""

    image: float = Field(ge=0.0, le=1.0)
    pixel: float = Field(ge=0.0, le=1.0)
    version: str = Field(min_length=1, description="versions.threshold_version: `<scope>@v<n>` or the static label")


def thresholds_in_force(
    scope: str | None, record: ControlRecord | None, *, image: float, pixel: float, static_version: str
) -> ThresholdsInForce:
    """The record's thresholds where it sets them, else the static settings (stamped `static_version`)."""
    if scope is None or record is None or (record.image_threshold is None and record.pixel_threshold is None):
        return ThresholdsInForce(image=image, pixel=pixel, version=static_version)
    return ThresholdsInForce(
        image=record.image_threshold if record.image_threshold is not None else image,
        pixel=record.pixel_threshold if record.pixel_threshold is not None else pixel,
        version=threshold_version(scope, record),
    )
