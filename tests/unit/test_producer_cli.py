"""Command-line parsing and the failures that happen before Kafka is reached."""
from __future__ import annotations

import pytest

from producer.cli import build_parser, main


def test_defaults():
    args = build_parser().parse_args([])
    assert args.source == "synthetic"
    assert args.fps is None and args.limit is None and not args.loop
    assert (args.width, args.height, args.seed, args.defect_rate) == (640, 480, 0, 0.1)
    assert (args.camera, args.line, args.format, args.quality) == ("cam-1", "line-1", "auto", 90)


def test_all_options():
    args = build_parser().parse_args(
        ["--source", "folder:/data", "--camera", "c7", "--line", "L2", "--object", "metal nut", "--fps", "12.5",
         "--loop", "--limit", "3", "--format", "png", "--quality", "70", "--width", "320", "--height", "240",
         "--seed", "9", "--defect-rate", "0.3", "--topic", "t", "--bootstrap-servers", "h:1", "--no-create-topic"]
    )
    assert args.source == "folder:/data" and args.camera == "c7" and args.line == "L2"
    assert args.object == "metal nut" and args.fps == 12.5 and args.loop and args.limit == 3
    assert args.format == "png" and args.quality == 70 and (args.width, args.height) == (320, 240)
    assert args.seed == 9 and args.defect_rate == 0.3 and args.topic == "t"
    assert args.bootstrap_servers == "h:1" and args.no_create_topic


@pytest.mark.parametrize(
    "argv",
    [["--fps", "-1"], ["--limit", "0"], ["--defect-rate", "1.5"], ["--format", "gif"], ["--quality", "0"]],
)
def test_bad_values_are_usage_errors(argv):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_unopenable_source_exits_2_with_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    assert main(["--source", f"folder:{tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_exporter_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin_nonexistent")
    assert main(["--limit", "1"]) == 2
    assert "zipkin_nonexistent" in capsys.readouterr().err
