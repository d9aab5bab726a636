"""Progress bars: on stderr when it is a terminal, never with --quiet, never on stdout."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import cv2
import pytest

from common.progress import bars_wanted, progress_bar
from producer.sources.synthetic import SyntheticSource
from worker.cli import build_parser, main

pytestmark = pytest.mark.timeout(600)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_never_when_quiet():
    assert bars_wanted(stream=Terminal()) and not bars_wanted(quiet=True, stream=Terminal())
    assert not bars_wanted(stream=io.StringIO())  # a pipe, a log file, CI


def test_the_bar_goes_to_stderr(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert sum(progress_bar(range(5), desc="work")) == 10
    assert "work" in terminal.getvalue() and "5/5" in terminal.getvalue()
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    list(progress_bar(range(5), desc="work", quiet=True))
    assert quiet.getvalue() == "" and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--dataset", "mvtec", "--root", "x", "--quiet"],
        ["calibrate", "a.png", "--object", "washer", "--target-fpr", "0.01", "--quiet"],
        ["references", "add", "a.png", "--object", "washer", "--quiet"],
        ["models", "pull", "--quiet"],
        ["models", "quantize-isnet", "--synthetic", "2", "--quiet"],
        ["inspect", "a.png", "--object", "washer", "--quiet"],
    ],
)
def test_every_long_running_command_takes_quiet(argv):
    assert build_parser().parse_args(argv).quiet is True


def test_inspect_draws_its_bar_on_a_terminal_stderr_and_keeps_stdout_json(tmp_path: Path, monkeypatch, capsys):
    paths = []
    for frame in SyntheticSource(width=96, height=72, seed=3, defect_rate=0.0, limit=4):
        paths.append(tmp_path / f"{frame.name}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    argv = ["inspect", *map(str, paths), "--object", "washer", "--profile", "tiny", "--foreground", "none"]
    for extra, drawn in (([], True), (["--quiet"], False)):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main([*argv, *extra]) == 0
        stdout = capsys.readouterr().out.splitlines()
        assert len(stdout) == 4 and all(line.startswith("{") for line in stdout)  # one JSON result per image
        assert ("4/4" in terminal.getvalue()) is drawn, terminal.getvalue()
