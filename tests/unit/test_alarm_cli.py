"""`linewatch-worker alarms` argument handling and rules checking (no broker needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from worker.alarms.cli import add_alarms_parser, main, run_alarms

EXAMPLE = Path(__file__).resolve().parents[2] / "docker" / "alarms.example.yaml"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="linewatch-worker")
    root.add_argument("--log-level", default="INFO")
    add_alarms_parser(root.add_subparsers(dest="command", required=True))
    return root


def test_subcommand_wiring_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["--log-level", "DEBUG", "alarms", "--rules", str(EXAMPLE), "--check"])
    assert args.command == "alarms" and args.func is run_alarms
    assert args.log_level == "DEBUG"  # the sub-command does not reset the parent's option
    assert run_alarms(args) == 0
    out = capsys.readouterr().out
    assert "rules OK" in out and "defect-burst" in out


def test_invalid_rules_exit_2_with_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {name: x, kind: anomaly, debounce: {anomalous: 0}}\n")
    assert main(["--rules", str(bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: rules[0] (name 'x'): debounce.anomalous: Input should be greater than or equal to 1" in err


def test_missing_rules_and_unsigned_webhook_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LINEWATCH_ALARMS__RULES_FILE", raising=False)
    assert main([]) == 2
    assert "no rules file" in capsys.readouterr().err
    monkeypatch.setenv("LINEWATCH_ALARMS__WEBHOOK_URL", "https://mes.example/alarms")
    monkeypatch.delenv("LINEWATCH_ALARMS__WEBHOOK_SECRET", raising=False)
    assert main(["--rules", str(EXAMPLE), "--check"]) == 2
    assert "webhook_secret" in capsys.readouterr().err


def test_rules_file_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEWATCH_ALARMS__RULES_FILE", str(EXAMPLE))
    assert main(["--check"]) == 0
