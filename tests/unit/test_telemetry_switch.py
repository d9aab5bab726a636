"""onnxruntime's usage telemetry is switched off before it can initialise: by every package a
linewatch entry point imports, and in every image's environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]


def entry_modules() -> list[str]:
    """The modules of the console scripts, and every `python -m` main of the packages."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    modules = {target.split(":")[0] for target in scripts.values()}
    for package in ("worker", "producer", "common"):
        for path in (REPO / package).rglob("*.py"):
            if 'if __name__ == "__main__"' in path.read_text(encoding="utf-8"):
                modules.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    return sorted(modules)


def test_every_entry_point_switches_onnxruntime_telemetry_off_before_importing_it():
    modules = entry_modules()
    assert {"worker.cli", "producer.cli", "worker.alarms.cli", "worker.dashboard.cli"} <= set(modules)
    # Importing a module runs its package's __init__ first; look before anything else is imported.
    probe = (
        "import importlib, importlib.util, os, sys\n"
        "for name in sys.argv[1:]:\n"
        "    os.environ.pop('ORT_DISABLE_TELEMETRY', None)\n"
        "    for key in [k for k in sys.modules if k.split('.')[0] in ('worker', 'producer', 'common')]:\n"
        "        del sys.modules[key]\n"
        "    importlib.import_module(name.split('.')[0])\n"
        "    print(name, os.environ.get('ORT_DISABLE_TELEMETRY'), 'onnxruntime' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"} | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", probe, *modules], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [f"{name} 1 False" for name in modules]


def test_every_image_sets_the_switch_in_its_runtime_environment():
    dockerfiles = sorted((REPO / "docker").glob("*.Dockerfile"))
    assert len(dockerfiles) >= 3
    for path in dockerfiles:
        runtime = path.read_text().rsplit("\nFROM ", 1)[-1]  # the last stage is the image that runs
        assert re.search(r"^ENV (.*\\\n)*.*\bORT_DISABLE_TELEMETRY=1\b", runtime, re.M), path.name
