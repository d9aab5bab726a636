"""Command-line handling that happens before Kafka is reached: settings overrides, refused values,
sources that cannot be opened. Publishing with the options is tests/integration/test_producer.py."""

from __future__ import annotations

import pytest

from producer.cli import _settings, build_parser, main


def test_topic_and_bootstrap_options_override_only_those_settings(monkeypatch):
    monkeypatch.setenv("LINEWATCH_KAFKA__FRAMES_TOPIC", "env-frames")
    monkeypatch.setenv("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", "env-host:9092")
    monkeypatch.setenv("LINEWATCH_KAFKA__CLIENT_ID", "env-client")
    plain = _settings(build_parser().parse_args([]))
    assert (plain.kafka.frames_topic, plain.kafka.bootstrap_servers) == ("env-frames", "env-host:9092")
    given = _settings(build_parser().parse_args(["--topic", "t", "--bootstrap-servers", "h:1"]))
    assert (given.kafka.frames_topic, given.kafka.bootstrap_servers) == ("t", "h:1")
    assert given.kafka.client_id == "env-client"  # the rest of the section stays as configured
    assert given.kafka.model_dump(exclude={"frames_topic", "bootstrap_servers"}) == plain.kafka.model_dump(
        exclude={"frames_topic", "bootstrap_servers"}
    )


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
