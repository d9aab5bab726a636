"""Kafka records of the contracts in DESIGN.md: frame headers, record sizes and dead letters.

One implementation of each, shared by the producer, the worker and the alarm service.

- `frame_headers` / `parse_frame_meta`: the `lw-frame` header of a frame message, written
  and read back strictly (`FrameHeaderError` says what is wrong, for the dead letter).
- `estimate_record_size`: what the broker compares with `max.message.bytes`.
- `dead_letter_error` / `dead_letter_record`: the original record plus an `lw-error` header.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from kafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import ValidationError

from common.schemas import ERROR_HEADER, FRAME_HEADER, DeadLetterError, FrameMeta, SourceRef

Headers = list[tuple[str, bytes]]

MAX_ERROR_MESSAGE_CHARS = 2000
MAX_SHOWN_INPUT_CHARS = 40  # of a rejected header field's value, quoted in the reason


# --------------------------------------------------------------------------- frame headers


def frame_headers(meta: FrameMeta, extra: Sequence[tuple[str, bytes]] = ()) -> Headers:
    """Kafka headers of a frame message without the trace context: `lw-frame` plus `extra`.

    A frame without traceability leaves the field out, so readers that predate it still accept it.
    """
    exclude = {"traceability"} if meta.traceability is None else None
    return [(FRAME_HEADER, meta.model_dump_json(exclude=exclude).encode("utf-8")), *extra]


class FrameHeaderError(ValueError):
    """The `lw-frame` header is missing (`MissingHeader`) or unusable (`InvalidHeader`)."""

    def __init__(self, error_type: Literal["MissingHeader", "InvalidHeader"], message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def parse_frame_meta(headers: Sequence[tuple[str, bytes | None]] | None) -> FrameMeta:
    """The record's one `lw-frame` header as FrameMeta; raises FrameHeaderError (only) otherwise.

    Strict: a duplicated header is refused, since a hop that read the other one would disagree.
    """
    values = [value or b"" for key, value in headers or () if key == FRAME_HEADER]
    if not values:
        raise FrameHeaderError("MissingHeader", f"no {FRAME_HEADER} header")
    if len(values) > 1:
        raise FrameHeaderError("InvalidHeader", f"{len(values)} {FRAME_HEADER} headers, exactly one is allowed")
    try:
        text = values[0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameHeaderError(
            "InvalidHeader", f"{FRAME_HEADER} header is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from exc
    if not text.strip():
        raise FrameHeaderError("InvalidHeader", f"{FRAME_HEADER} header is empty")
    try:
        return FrameMeta.model_validate_json(text)
    except ValidationError as exc:
        details = "; ".join(_validation_problem(error) for error in exc.errors())
        raise FrameHeaderError("InvalidHeader", f"invalid {FRAME_HEADER} header: {details}") from exc


def _validation_problem(error: Any) -> str:
    """`field: what is wrong (got <value, shortened>)`."""
    where = ".".join(map(str, error["loc"])) or "<root>"
    value = error.get("input")
    if error["type"] in ("missing", "json_invalid") or isinstance(value, dict):
        return f"{where}: {error['msg']}"  # nothing useful to quote
    shown = repr(value)
    if len(shown) > MAX_SHOWN_INPUT_CHARS:
        shown = f"{shown[:MAX_SHOWN_INPUT_CHARS]}... ({len(shown)} chars)"
    return f"{where}: {error['msg']} (got {shown})"


# --------------------------------------------------------------------------- sizes


def estimate_record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> int:
    """Upper bound of the serialised size of one record in its own batch (what brokers compare
    with `max.message.bytes`), from the Kafka client's own estimator."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [(k, v or b"") for k, v in headers]))


# --------------------------------------------------------------------------- dead letters


def dead_letter_error(
    stage: str, error_type: str, message: str, *, worker_id: str, source: SourceRef | None, now: datetime
) -> DeadLetterError:
    """The `lw-error` header's content; a long message is cut to MAX_ERROR_MESSAGE_CHARS."""
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
    return DeadLetterError(
        stage=stage, error_type=error_type, message=message, worker_id=worker_id, time=now, source=source
    )


def dead_letter_record(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    error: DeadLetterError,
    max_bytes: int,
) -> tuple[bytes | None, bytes | None, Headers]:
    """(key, value, headers) of the dead letter: the original record plus `lw-error`.

    A previous `lw-error` is replaced. If the original value no longer fits next to the error
    header, the value is left out and the error message says so (the record is still
    dead-lettered, never dropped).
    """
    original = [(k, v if v is not None else b"") for k, v in headers or () if k != ERROR_HEADER]
    with_error = original + [(ERROR_HEADER, error.model_dump_json().encode("utf-8"))]
    if estimate_record_size(key, value, with_error) <= max_bytes:
        return key, value, with_error
    size = len(value or b"")
    omitted = error.model_copy(
        update={"message": f"{error.message} [original value of {size} bytes omitted: too large]"}
    )
    without_value = original + [(ERROR_HEADER, omitted.model_dump_json().encode("utf-8"))]
    if estimate_record_size(key, None, without_value) <= max_bytes:
        return key, None, without_value
    return trimmed_dead_letter(key, original, error, max_bytes, value_bytes=size)


def trimmed_dead_letter(
    key: bytes | None, headers: Sequence[tuple[str, bytes]], error: DeadLetterError, max_bytes: int, value_bytes: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """The smallest dead letter: `lw-frame` (when it fits) and `lw-error`, no value, no other header.

    What a frame whose headers alone exceed the record limit becomes: it is still dead-lettered,
    with the reason, instead of being refused by the broker forever.
    """
    dropped = sum(1 for k, _ in headers if k != FRAME_HEADER)
    note = f" [original value of {value_bytes} bytes and {dropped} headers omitted: too large]"
    error = error.model_copy(update={"message": error.message + note})
    error_header = (ERROR_HEADER, error.model_dump_json().encode("utf-8"))
    frame = [(k, v) for k, v in headers if k == FRAME_HEADER][:1]
    if frame and estimate_record_size(key, None, [*frame, error_header]) <= max_bytes:
        return key, None, [*frame, error_header]
    if key and estimate_record_size(key, None, [error_header]) <= max_bytes:
        return key, None, [error_header]
    return None, b"", [error_header]  # Kafka takes no record with neither a key nor a value
