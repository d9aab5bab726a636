"""argparse `type=` converters shared by the command lines (producer, worker eval)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1, or argparse's usage error."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
