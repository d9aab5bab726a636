"""Message contracts between producer, worker and downstream consumers (see DESIGN.md).

Everything that crosses Kafka is one of these pydantic models serialised as JSON.
They are frozen: a message is a fact, not a mutable object.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1
FRAME_HEADER = "lw-frame"
ERROR_HEADER = "lw-error"
TRACEPARENT_HEADER = "traceparent"

ContentType = Literal["image/jpeg", "image/png"]
Verdict = Literal["ok", "anomalous", "skipped", "calibrating"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Traceability(_Message):
    """What ties a frame (and its verdict) to a physical part on the line; every field optional.

    `part_id`, `recipe` and `lot` come from the line (PLC, MES, barcode): never made up.
    `frame_counter` and `hardware_timestamp_ns` are the camera's own (GenICam frame id and
    timestamp, in the camera's clock).
    """

    part_id: str | None = Field(None, min_length=1, max_length=128)
    recipe: str | None = Field(None, min_length=1, max_length=128)
    lot: str | None = Field(None, min_length=1, max_length=128)
    frame_counter: int | None = Field(None, ge=0)
    hardware_timestamp_ns: int | None = Field(None, ge=0)

    @field_validator("part_id", "recipe", "lot")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return value

    def is_empty(self) -> bool:
        return all(value is None for value in self.model_dump().values())


class FrameMeta(_Message):
    """Header `lw-frame` of a frame message; the value is the encoded image itself."""

    schema_version: Literal[1] = SCHEMA_VERSION
    frame_id: str = Field(min_length=1, max_length=128)
    camera_id: str = Field(min_length=1, max_length=128)
    line_id: str = Field(min_length=1, max_length=128)
    # Used verbatim inside CLIP prompts ("a photo of a damaged {object_name}"), whose
    # context is 77 tokens: 100 characters is already more than a prompt can use.
    object_name: str = Field(min_length=1, max_length=100)
    captured_at: datetime
    content_type: ContentType
    width: int = Field(gt=0, le=65535)
    height: int = Field(gt=0, le=65535)
    # Absent in frames of sources that know nothing about parts (and in every older frame).
    traceability: Traceability | None = None

    @field_validator("frame_id", "camera_id", "line_id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        # ids become Kafka keys and appear in log lines: no control characters
        if not value.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return value

    @field_validator("object_name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError("object_name must be printable text and not blank")
        return value.strip()

    @field_validator("captured_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("captured_at must carry a timezone (use UTC)")
        return value


class Box(_Message):
    """Axis-aligned box in frame pixels: top-left corner plus size."""

    x: int
    y: int
    w: int
    h: int


class Region(_Message):
    """A connected defect region of the thresholded anomaly map."""

    box: Box
    area: int
    peak_score: float
    mean_score: float


class Instance(_Message):
    """One foreground object instance (connected component) and its score."""

    box: Box
    area: int
    score: float
    tiles: int


class RleMask(_Message):
    """COCO run-length encoding (compressed string form, as pycocotools writes it)."""

    size: tuple[int, int]  # (height, width)
    counts: str


class Heatmap(_Message):
    """Low-resolution anomaly map as a grey PNG (0..255 = score 0..1), base64."""

    width: int
    height: int
    png_base64: str


class Versions(_Message):
    model_fingerprint: str
    profile: str
    prompt_set: str
    threshold_version: str
    tile_temperature: float | None = None  # the tile score's softmax scale (None in results from before it existed)
    # the reference bank that scored the frame: "<scope>@v<version>" (a worker), "files:<n>" (inspect
    # --references); None: no bank (zero-shot, or the rolling pool alone)
    reference_bank: str | None = None


class SourceRef(_Message):
    topic: str
    partition: int
    offset: int


class InspectionResult(_Message):
    """Value of a `linewatch.results` message (key = camera id)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    frame_id: str
    camera_id: str
    line_id: str
    object_name: str
    captured_at: datetime
    processed_at: datetime
    # `score` is calibrated: the threshold in force maps to 0.5 (see common/control.normalised_score);
    # `raw_score` is the Inspector's own score, compared with `threshold`.
    score: float = Field(ge=0.0, le=1.0)
    raw_score: float | None = Field(None, ge=0.0, le=1.0)
    threshold: float
    verdict: Verdict
    mask: RleMask | None = None
    heatmap: Heatmap | None = None
    regions: list[Region] = Field(default_factory=list)
    instances: list[Instance] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    versions: Versions
    worker_id: str
    source: SourceRef | None = None
    note: str | None = None  # why a frame was skipped, or what was shrunk to fit
    traceability: Traceability | None = None  # copied from the frame's header


class DeadLetterError(_Message):
    """Header `lw-error` of a dead-letter message."""

    stage: str
    error_type: str
    message: str
    worker_id: str
    time: datetime
    source: SourceRef | None = None
