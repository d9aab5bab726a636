"""JSON, image and live-update endpoints (all behind a login; writes need the operator role)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial

from kafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from common.codecs import ImageDecodeError
from common.control import FeedbackLabel, FeedbackRecord
from common.messages import parse_frame_meta
from common.schemas import InspectionResult, utc_now
from worker.dashboard.alarm_state import AlarmAck, Silence
from worker.dashboard.clients import PoolFull
from worker.dashboard.images import placeholder_svg, render_overlay
from worker.dashboard.kafka_io import RecordExpired
from worker.dashboard.web import Backend, backend, principal, requires
from worker.inspection.overlays import heat_level

KEEPALIVE_S = 15.0
OVERLAY_CACHE = 128


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedbackBody(_Body):
    camera_id: str = Field(min_length=1, max_length=128)
    frame_id: str = Field(min_length=1, max_length=128)
    label: FeedbackLabel
    note: str | None = Field(None, max_length=2000)
    partition: int | None = None  # where the result is on the results topic, for a frame no longer in memory
    offset: int | None = None


class AckBody(_Body):
    note: str | None = Field(None, max_length=2000)


class SilenceBody(_Body):
    camera_id: str = Field(min_length=1, max_length=128)
    minutes: float = Field(gt=0, le=24 * 60)
    note: str | None = Field(None, max_length=2000)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(f"invalid request: {problems}", 422)


async def find_result(
    b: Backend, camera_id: str, frame_id: str, partition: str | None, offset: str | None
) -> InspectionResult | None:
    """From memory, else from the results topic at the given partition/offset (an alarm's frame)."""
    result = b.state.result(camera_id, frame_id)
    if result is not None or partition is None or offset is None:
        return result
    try:
        record = await run_in_threadpool(b.reader.read, b.settings.kafka.results_topic, int(partition), int(offset))
        found = InspectionResult.model_validate_json(record.value or b"")
    except (RecordExpired, TimeoutError, KafkaError, ValueError, ValidationError):
        return None
    return found if (found.camera_id, found.frame_id) == (camera_id, frame_id) else None


@requires("viewer")
async def me(request: Request) -> Response:
    who = request.state.principal
    return JSONResponse({"user": who.name, "role": who.role, "can_write": who.can_write})


@requires("viewer")
async def snapshot(request: Request) -> Response:
    return JSONResponse(backend(request).state.changes_since(0))


@requires("viewer")
async def events(request: Request) -> Response:
    """Server-sent events: the whole state first, then what changed, every `push_interval_ms`; an `ended`
    event closes the stream as soon as its login no longer holds (logout, revocation, expiry)."""
    b = backend(request)
    interval = b.settings.dashboard.push_interval_ms / 1000
    if b.event_streams >= b.settings.dashboard.max_event_streams:
        response = _error("too many live-update connections: try again later", 503)
        response.headers["Retry-After"] = "10"
        return response
    b.event_streams += 1  # counted from here, so a burst of connections cannot all pass the check

    async def stream() -> AsyncIterator[str]:
        version, last_sent, first = 0, time.monotonic(), True
        try:
            while not (b.stopping is not None and b.stopping.is_set()):
                if principal(request)[0] is None:  # logged out, revoked, expired, or the user or token is gone
                    yield "event: ended\ndata: {}\n\n"
                    return
                if first or b.state.version != version:
                    payload = b.state.changes_since(version)
                    version, first, last_sent = payload["version"], False, time.monotonic()
                    yield f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
                elif time.monotonic() - last_sent > KEEPALIVE_S:
                    last_sent = time.monotonic()
                    yield ": keepalive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(interval)
        finally:
            b.event_streams -= 1

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@requires("viewer")
async def result_json(request: Request) -> Response:
    p = request.path_params
    result = await find_result(
        backend(request),
        p["camera_id"],
        p["frame_id"],
        request.query_params.get("partition"),
        request.query_params.get("offset"),
    )
    if result is None:
        return _error("no such result in memory (it may be older than the last results kept)", 404)
    return Response(result.model_dump_json(), media_type="application/json")


@requires("viewer")
async def overlay(request: Request) -> Response:
    """The frame from the frames topic (by the result's source) with heatmap and outline, or a placeholder."""
    b, p = backend(request), request.path_params
    query = request.query_params
    result = await find_result(b, p["camera_id"], p["frame_id"], query.get("partition"), query.get("offset"))
    headers = {"Cache-Control": "private, max-age=60"}
    if result is None or result.source is None:
        return Response(placeholder_svg("no frame", "result not found"), media_type="image/svg+xml", headers=headers)
    key = result.frame_id
    if key not in b.overlays:
        try:
            record = await run_in_threadpool(
                b.reader.read, result.source.topic, result.source.partition, result.source.offset
            )
        except RecordExpired:
            svg = placeholder_svg("frame expired", "no longer on the frames topic (retention)")
            return Response(svg, media_type="image/svg+xml", headers=headers)
        except (TimeoutError, KafkaError):
            return Response(placeholder_svg("frame unavailable", "broker did not answer"), media_type="image/svg+xml")
        meta_ok = _frame_id(record.headers) == result.frame_id
        if not meta_ok or not record.value:
            svg = placeholder_svg("frame not found", "the offset holds another frame")
            return Response(svg, media_type="image/svg+xml", headers=headers)
        ws = b.settings.worker
        draw = partial(
            render_overlay,
            level=heat_level(ws.pixel_threshold),
            max_bytes=ws.max_frame_bytes,
            max_pixels=ws.max_frame_pixels,
        )
        try:
            b.overlays[key] = await b.renders.run(draw, record.value, result)
        except PoolFull:
            busy = {"Cache-Control": "no-store", "Retry-After": "1"}
            svg = placeholder_svg("busy", "too many frames drawn at once")
            return Response(svg, status_code=503, media_type="image/svg+xml", headers=busy)
        except ImageDecodeError as exc:  # over the frame limits (checked before decoding) or not an image
            return Response(placeholder_svg("frame not shown", exc.reason), media_type="image/svg+xml", headers=headers)
        while len(b.overlays) > OVERLAY_CACHE:
            b.overlays.pop(next(iter(b.overlays)))
    return Response(b.overlays[key], media_type="image/jpeg", headers=headers)


def _frame_id(headers) -> str | None:
    try:
        return parse_frame_meta(headers).frame_id
    except Exception:  # a header we cannot read: not the frame we look for
        return None


@requires("operator")
async def feedback(request: Request) -> Response:
    b = backend(request)
    body = await _body(request, FeedbackBody)
    if isinstance(body, JSONResponse):
        return body
    partition = None if body.partition is None else str(body.partition)
    offset = None if body.offset is None else str(body.offset)
    result = await find_result(b, body.camera_id, body.frame_id, partition, offset)
    if result is None:
        return _error("unknown frame: feedback needs a result the dashboard has seen", 404)
    record = FeedbackRecord(
        frame_id=result.frame_id,
        camera_id=result.camera_id,
        object_name=result.object_name,
        label=body.label,
        by=request.state.principal.name,
        raw_score=result.raw_score,
        source=result.source,
        note=body.note,
    )
    await run_in_threadpool(b.writer.feedback, record)
    return JSONResponse(json.loads(record.model_dump_json()), status_code=201)


@requires("operator")
async def acknowledge(request: Request) -> Response:
    body = await _body(request, AckBody)
    if isinstance(body, JSONResponse):
        return body
    record = AlarmAck(alarm_id=request.path_params["alarm_id"], by=request.state.principal.name, note=body.note)
    await run_in_threadpool(backend(request).writer.state, record)
    return JSONResponse(json.loads(record.model_dump_json()), status_code=201)


@requires("operator")
async def silence(request: Request) -> Response:
    body = await _body(request, SilenceBody)
    if isinstance(body, JSONResponse):
        return body
    now = utc_now()
    record = Silence(
        camera_id=body.camera_id,
        until=now + timedelta(minutes=body.minutes),
        at=now,
        by=request.state.principal.name,
        note=body.note,
    )
    await run_in_threadpool(backend(request).writer.state, record)
    return JSONResponse(json.loads(record.model_dump_json()), status_code=201)


@requires("operator")
async def lift_silence(request: Request) -> Response:
    await run_in_threadpool(backend(request).writer.lift_silence, request.path_params["camera_id"])
    return JSONResponse({"camera_id": request.path_params["camera_id"], "silenced": False})
