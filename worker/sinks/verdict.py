"""What a line sink sends for one result: the PLC's OK/NG view of an InspectionResult (pure).

Field names follow the OPC UA Machine Vision companion specification (OPC 40100) where it has
one: ResultId, PartId, ProductId, ResultState, processing times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from common.schemas import InspectionResult

LineState = Literal["OK", "NG", "NONE"]  # NONE: not inspected (skipped, calibrating)
# OPC 40100 ResultState values as this sink uses them: 0 undefined, 1 OK, 2 NG
RESULT_STATE_CODES: dict[str, int] = {"NONE": 0, "OK": 1, "NG": 2}


class LineVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    result_id: str  # the frame id: one result per frame
    camera_id: str
    line_id: str
    part_id: str | None
    product_id: str  # the recipe when the line sent one, else the inspected object
    recipe: str | None
    lot: str | None
    frame_counter: int | None
    state: LineState
    verdict: str  # the worker's own: ok, anomalous, skipped, calibrating
    score: float
    threshold_version: str
    captured_at: datetime
    processed_at: datetime
    delivered_at: datetime
    processing_ms: float  # capture -> result published by the worker
    delivery_ms: float  # capture -> this sink took it
    late: bool

    @property
    def result_state(self) -> int:
        return RESULT_STATE_CODES[self.state]


def line_verdict(
    result: InspectionResult, *, now: datetime, late_after_ms: float | None = None, late_is_ng: bool = False
) -> LineVerdict:
    """The sink's view of `result` at `now`; late when `now - captured_at > late_after_ms`."""
    trace = result.traceability
    delivery_ms = (now - result.captured_at).total_seconds() * 1000.0
    late = late_after_ms is not None and delivery_ms > late_after_ms
    if result.verdict == "anomalous":
        state: LineState = "NG"
    elif result.verdict == "ok":
        state = "OK"
    else:
        state = "NONE"
    if late and late_is_ng:
        state = "NG"
    return LineVerdict(
        result_id=result.frame_id,
        camera_id=result.camera_id,
        line_id=result.line_id,
        part_id=trace.part_id if trace else None,
        product_id=(trace.recipe if trace and trace.recipe else result.object_name),
        recipe=trace.recipe if trace else None,
        lot=trace.lot if trace else None,
        frame_counter=trace.frame_counter if trace else None,
        state=state,
        verdict=result.verdict,
        score=result.score,
        threshold_version=result.versions.threshold_version,
        captured_at=result.captured_at,
        processed_at=result.processed_at,
        delivered_at=now,
        processing_ms=round((result.processed_at - result.captured_at).total_seconds() * 1000.0, 3),
        delivery_ms=round(delivery_ms, 3),
        late=late,
    )
