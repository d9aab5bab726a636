"""Offline by default: the Hugging Face hub is never asked anything unless a download was asked for.

huggingface_hub reads HF_HUB_OFFLINE into `constants.HF_HUB_OFFLINE` when it is first imported,
and checks that constant before every request. So the switch is set in the environment before
any model code imports it (this package's __init__), and in the constant too in case something
imported it earlier. `models pull` is the one place that turns downloads on, for its own call.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _set_hub_constant(offline: bool) -> None:
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = offline


def stay_offline() -> None:
    """Forbid hub requests in this process (serve, inspect, eval, check)."""
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    _set_hub_constant(True)


@contextmanager
def downloads_allowed() -> Iterator[None]:
    """Allow hub requests inside the block only (`models pull`)."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "0"
    _set_hub_constant(False)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _set_hub_constant(True)
