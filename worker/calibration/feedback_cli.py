"""`linewatch-worker feedback add|list`: operators' labels on results (topic `kafka.feedback_topic`).

    linewatch-worker feedback add --frame-id cam-3-01042 --camera cam-3 --object bottle \
        --label false_alarm --by alice --partition 2 --offset 88212 --raw-score 0.81
    linewatch-worker feedback list --camera cam-3 --label false_alarm

`--partition/--offset` say where the frame is on the frames topic (a result's `source`):
`calibrate --from-feedback` needs them to fetch the frame. Exit codes: 0 done, 2 bad input,
1 the broker could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from pydantic import ValidationError

from common.argtypes import positive_int
from common.control import FeedbackLabel, FeedbackRecord
from common.schemas import SourceRef
from common.settings import LinewatchSettings

LABELS = get_args(FeedbackLabel)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_feedback_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "feedback", help="write or list operators' labels on results (docs/guides/references-and-feedback.md)"
    )
    actions = parser.add_subparsers(dest="feedback_command", required=True)
    add = actions.add_parser("add", help="label one result: false_alarm, defect or good_reference")
    add.add_argument("--frame-id", required=True)
    add.add_argument("--camera", required=True)
    add.add_argument("--object", required=True, help="the product as named in the result")
    add.add_argument("--label", required=True, choices=LABELS)
    add.add_argument("--by", required=True, help="who labels")
    add.add_argument("--partition", type=_non_negative_int, default=None, help="the frame's frames-topic partition")
    add.add_argument("--offset", type=_non_negative_int, default=None, help="the frame's frames-topic offset")
    add.add_argument("--raw-score", type=float, default=None, help="the result's raw_score")
    add.add_argument("--note", default=None)
    show = actions.add_parser("list", help="print the feedback records, one JSON per line, oldest first")
    show.add_argument("--camera", default=None)
    show.add_argument("--object", default=None)
    show.add_argument("--label", choices=LABELS, default=None)
    show.add_argument("--limit", type=positive_int, default=None, help="only the newest N")


def build_feedback(args, frames_topic: str) -> FeedbackRecord:
    """The record `feedback add` writes; ValueError naming each bad field."""
    if (args.partition is None) != (args.offset is None):
        raise ValueError("--partition and --offset go together (where the frame is on the frames topic)")
    source = None
    if args.partition is not None:
        source = SourceRef(topic=frames_topic, partition=args.partition, offset=args.offset)
    try:
        return FeedbackRecord(
            frame_id=args.frame_id,
            camera_id=args.camera,
            object_name=args.object,
            label=args.label,
            by=args.by,
            raw_score=args.raw_score,
            source=source,
            note=args.note,
        )
    except ValidationError as exc:
        names = {"camera_id": "camera", "object_name": "object"}
        problems = [
            f"--{names.get(str(e['loc'][0]), str(e['loc'][0])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        ]
        raise ValueError("; ".join(problems)) from None


def run_feedback(args, settings: LinewatchSettings) -> int:
    from kafka.errors import KafkaError

    from common.kafka import kafka_failure

    try:
        if args.feedback_command == "add":
            return _add(args, settings)
        return _list(args, settings)
    except (KafkaError, TimeoutError) as exc:
        print(f"error: {kafka_failure(settings.kafka, exc)}", file=sys.stderr)
        return 1


def _add(args, settings: LinewatchSettings) -> int:
    from worker.calibration.topics import publish_feedback

    try:
        feedback = build_feedback(args, settings.kafka.frames_topic)
    except ValueError as exc:
        print(f"error: invalid feedback: {exc}", file=sys.stderr)
        return 2
    meta = publish_feedback(settings.kafka, feedback)
    print(f"wrote to {meta.topic} (partition {meta.partition}, offset {meta.offset}): {feedback.model_dump_json()}")
    return 0


def _list(args, settings: LinewatchSettings) -> int:
    from worker.calibration.topics import read_feedback

    log = read_feedback(settings.kafka)
    for line in log.invalid:
        print(f"invalid: {line}", file=sys.stderr)
    chosen = [
        feedback
        for _, feedback in log.records
        if (args.camera is None or feedback.camera_id == args.camera)
        and (args.object is None or feedback.object_name == args.object)
        and (args.label is None or feedback.label == args.label)
    ]
    for feedback in chosen[-args.limit :] if args.limit else chosen:
        print(feedback.model_dump_json())
    print(f"{len(chosen)} feedback record(s)", file=sys.stderr)
    return 0
