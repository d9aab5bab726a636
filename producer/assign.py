"""`linewatch-producer assign-partitions`: print an even camera -> partition table for the settings.

    linewatch-producer assign-partitions --cameras cam-1..cam-40 --partitions 16   # YAML for LINEWATCH_CONFIG

Cameras already in `kafka.camera_partitions` (read from the settings) keep their partition, so a
table can grow camera by camera; `--fresh` deals every listed camera out anew.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import yaml

from common.argtypes import positive_int
from common.partitions import assign, expand, spread
from common.settings import LinewatchSettings


def add_assign_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "assign-partitions",
        help="print an even kafka.camera_partitions table",
        description="Print an even kafka.camera_partitions table (YAML for LINEWATCH_CONFIG, or an environment "
        "line). Cameras already in the settings' table keep their partition.",
    )
    parser.add_argument("--cameras", nargs="+", required=True, help="camera ids; cam-1..cam-40 is a range")
    parser.add_argument("--partitions", type=positive_int, required=True, help="partitions of the frames topic")
    parser.add_argument("--fps", action="append", default=[], metavar="CAMERA=FPS", help="a camera's rate (default 1)")
    parser.add_argument("--fresh", action="store_true", help="ignore the table in the settings: place every camera")
    parser.add_argument("--format", choices=["yaml", "env"], default="yaml", help="yaml (default) or env")


def assign_partitions(args: argparse.Namespace) -> int:
    rates = {name: float(rate) for name, _, rate in (pair.partition("=") for pair in args.fps)}
    keep = {} if args.fresh else LinewatchSettings().kafka.camera_partitions
    table = assign(expand(args.cameras), args.partitions, rates, keep)
    if args.format == "env":
        print(f"LINEWATCH_KAFKA__CAMERA_PARTITIONS={shlex.quote(json.dumps(table, separators=(',', ':')))}")
    else:
        print(yaml.safe_dump({"kafka": {"camera_partitions": table}}, sort_keys=False), end="")
    result = spread(table, args.partitions, rates, table)
    moved = sorted(camera for camera, p in keep.items() if table.get(camera) != p)
    print(
        f"{len(table)} camera(s) over {args.partitions} partitions: busiest partition {result.busiest:g} "
        f"vs {result.even:.2f} if even ({result.busiest / result.even:.2f}x)"
        + (f"; beyond --partitions, so moved (or left out if not listed): {' '.join(moved)}" if moved else ""),
        file=sys.stderr,
    )
    return 0
