"""Progress bars for the commands that run longer than a few seconds (tqdm, on stderr).

A bar is drawn only when stderr is a terminal and the command was not given --quiet: in a pipe,
a log file or CI it would be noise, and stdout (JSON, reports) never carries one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO


def add_quiet_flag(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """--quiet (and any older spellings in `aliases`): no progress bars."""
    parser.add_argument(
        "--quiet",
        *aliases,
        dest="quiet",
        action="store_true",
        help="no progress bars (they are drawn only when stderr is a terminal anyway)",
    )


def bars_wanted(quiet: bool = False, stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return not quiet and hasattr(stream, "isatty") and stream.isatty()


def progress_bar(iterable: Any = None, *, total: int | None = None, quiet: bool = False, **options: Any):
    """A tqdm bar on stderr, disabled unless bars_wanted(quiet); `options` go to tqdm (desc, unit ...)."""
    from tqdm import tqdm

    options.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, file=sys.stderr, disable=not bars_wanted(quiet), **options)
