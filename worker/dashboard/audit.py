"""The audit page's endpoint: a scope's (or every scope's) control changes from the audit topic, newest
first in the broker's order, PAGE at a time (`?skip=N` pages back)."""

from __future__ import annotations

import json

from kafka.errors import KafkaError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.control import parse_scope
from worker.dashboard.web import backend, requires

PAGE = 200  # records per page


def read_trail(settings, scope: str | None) -> list[dict]:
    """The audit records (of `scope`), newest first in the broker's order, as JSON-ready dicts with the
    broker's time as `logged_at` (read from the topic each time: it holds a few hundred bytes per change)."""
    from common.audit import read_audit_entries

    entries, _ = read_audit_entries(settings.kafka, scope, timeout_s=10.0)
    return [
        json.loads(e.record.model_dump_json(exclude_none=True)) | {"logged_at": e.logged_at.isoformat()}
        for e in reversed(entries)
    ]


@requires("viewer")
async def trail(request: Request) -> Response:
    scope = request.query_params.get("scope") or None
    if scope is not None:
        try:
            parse_scope(scope)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
    skip = request.query_params.get("skip", "0")
    if not skip.isdigit() or len(skip) > 9:
        return JSONResponse({"error": "skip: a number of records"}, status_code=400)
    b = backend(request)
    try:
        records = await run_in_threadpool(b.audit, scope)
    except (KafkaError, TimeoutError, RuntimeError) as exc:
        return JSONResponse({"error": f"audit topic not readable: {type(exc).__name__}: {exc}"}, status_code=503)
    first = int(skip)
    page = records[first : first + PAGE]
    return JSONResponse({"scope": scope, "records": page, "skip": first, "total": len(records)})
