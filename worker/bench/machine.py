"""What a benchmark ran on: every figure names its CPU, since figures differ between CPUs."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name, as every figure must say which CPU it was taken on."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
