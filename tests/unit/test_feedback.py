"""`linewatch-worker feedback add` input checks (no broker: bad input never reaches Kafka)."""

from __future__ import annotations

import argparse

import pytest

from common.control import FeedbackRecord
from worker.calibration.feedback_cli import build_feedback
from worker.cli import build_parser, main

BASE = ["feedback", "add", "--frame-id", "cam-1-00042", "--camera", "cam-1", "--object", "bottle", "--by", "alice"]


def parsed(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args([*BASE, *extra])


def test_a_full_record() -> None:
    args = parsed(
        "--label", "false_alarm", "--partition", "2", "--offset", "881", "--raw-score", "0.8", "--note", "glare"
    )
    record = build_feedback(args, "linewatch.frames")
    assert isinstance(record, FeedbackRecord)
    assert (record.frame_id, record.camera_id, record.object_name, record.label, record.by) == (
        "cam-1-00042",
        "cam-1",
        "bottle",
        "false_alarm",
        "alice",
    )
    assert (record.source.topic, record.source.partition, record.source.offset) == ("linewatch.frames", 2, 881)
    assert record.raw_score == 0.8 and record.note == "glare" and record.at.tzinfo is not None
    assert FeedbackRecord.model_validate_json(record.model_dump_json()) == record


def test_without_a_position_the_source_is_unknown() -> None:
    assert build_feedback(parsed("--label", "defect"), "linewatch.frames").source is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label", "false_alarm", "--partition", "1"], "--partition and --offset go together"),
        (["--label", "false_alarm", "--offset", "1"], "--partition and --offset go together"),
        (["--label", "false_alarm", "--raw-score", "1.5"], "--raw-score: Input should be less than or equal to 1"),
    ],
)
def test_bad_input_is_named(extra: list[str], message: str, capsys) -> None:
    with pytest.raises(ValueError, match=message):
        build_feedback(parsed(*extra), "linewatch.frames")
    # the command says so and exits 2 before any broker is contacted (none runs here)
    assert main([*BASE, *extra]) == 2
    assert f"error: invalid feedback: {message}" in capsys.readouterr().err


def test_empty_and_long_fields_are_refused(capsys) -> None:
    args = build_parser().parse_args(
        ["feedback", "add", "--frame-id", "", "--camera", "c", "--object", "o", "--by", "b", "--label", "defect"]
    )
    with pytest.raises(ValueError, match="--frame-id: String should have at least 1 character"):
        build_feedback(args, "t")
    args.frame_id, args.note = "f", "x" * 2001
    with pytest.raises(ValueError, match="--note: String should have at most 2000 characters"):
        build_feedback(args, "t")


@pytest.mark.parametrize(
    "extra",
    [
        ["--label", "maybe"],
        ["--label", "defect", "--partition", "-1", "--offset", "0"],
        ["--label", "defect", "--offset", "x"],
    ],
)
def test_usage_errors(extra: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*BASE, *extra])
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err
