"""The alarm event: value of a `linewatch.alarms` message (key = camera id, or line id) and MES webhook body."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.schemas import utc_now

ALARM_SCHEMA_VERSION = 1
AlarmKind = Literal["anomaly", "silence", "drift", "skipped"]

# Namespace of the deterministic alarm ids (uuid5): the same rule firing on the same frames
# gives the same id, hence the same Idempotency-Key at the MES.
_ALARM_NAMESPACE = uuid.UUID("6f1d2c9e-3b7a-5e44-9a51-1c2f0f4e7a10")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MaskRef(_Model):
    """Where the full InspectionResult (mask, heatmap, regions) of a triggering frame lives.

    `topic`/`partition`/`offset` address the result message on the results topic; fetch it with
    `consumer.assign([TopicPartition(topic, partition)]); consumer.seek(..., offset)`.
    """

    frame_id: str
    topic: str
    partition: int
    offset: int
    has_mask: bool = False


class AlarmEvent(_Model):
    schema_version: Literal[1] = ALARM_SCHEMA_VERSION
    alarm_id: str = Field(description="stable id; also the webhook Idempotency-Key")
    kind: AlarmKind
    rule: str
    line_id: str
    camera_id: str | None = None  # None for a line-wide silence alarm
    object_name: str | None = None
    frame_ids: list[str] = Field(default_factory=list, description="triggering frames, oldest first")
    part_ids: list[str | None] = Field(
        default_factory=list, description="part ids of frame_ids, same order (None where the frame had none)"
    )
    scores: list[float] = Field(default_factory=list, description="image scores of frame_ids, same order")
    threshold: float | None = Field(None, description="score threshold the rule applied (None = result verdicts)")
    anomalous_in_window: int | None = None  # anomaly: N anomalous ...
    window: int | None = None  # ... of the last M frames
    silent_for_s: float | None = None  # silence: seconds without a result when raised
    rate: float | None = None  # drift: anomalous share of the window when raised (skipped: skipped share) ...
    rate_limit: float | None = None  # ... and the rule's multiple x target_rate it exceeded
    masks: list[MaskRef] = Field(default_factory=list)
    first_seen: datetime | None = Field(None, description="captured_at of the first triggering frame / last result")
    last_seen: datetime | None = Field(None, description="captured_at of the last triggering frame / last result")
    created_at: datetime = Field(default_factory=utc_now)
    message: str = ""

    @property
    def key(self) -> bytes:
        """Kafka key: camera id when there is one (keeps a camera's alarms ordered), else line id."""
        return (self.camera_id or self.line_id).encode("utf-8")


def alarm_id_for(*parts: object) -> str:
    """Deterministic id from the parts that identify one alarm (rule, kind, stream, frames ...)."""
    return str(uuid.uuid5(_ALARM_NAMESPACE, "\x1f".join(str(p) for p in parts)))
