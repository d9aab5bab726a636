"""The producer's options for line cameras: GenICam trigger and image settings, part traceability."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from typing import Any

from common.schemas import Traceability
from producer.counters import FrameCounterWatch
from producer.sources.base import Frame
from producer.sources.pixels import SUPPORTED_PIXEL_FORMATS

log = logging.getLogger("linewatch.producer")


def add_line_arguments(parser: argparse.ArgumentParser) -> None:
    cam = parser.add_argument_group("GenICam camera (--source genicam:ID)")
    cam.add_argument(
        "--trigger",
        choices=["free-run", "software", "hardware"],
        default="free-run",
        help="free-run (the camera's own pace), software (one trigger per --part-ids line, or at --fps), "
        "hardware (the camera's trigger line) (default free-run)",
    )
    cam.add_argument("--trigger-source", default="Line0", help="trigger line of --trigger hardware (default Line0)")
    cam.add_argument("--pixel-format", choices=SUPPORTED_PIXEL_FORMATS, default=None, help="default: the camera's")
    cam.add_argument(
        "--camera-roi",
        type=_region,
        default=None,
        metavar="X,Y,W,H",
        help="read only this region of the sensor (default: the whole sensor)",
    )
    cam.add_argument("--exposure-us", type=float, default=None, help="exposure time in microseconds (auto off)")
    cam.add_argument("--gain-db", type=float, default=None, help="gain in dB (auto off)")
    cam.add_argument("--camera-fps", type=float, default=None, help="free-run: the camera's acquisition frame rate")
    cam.add_argument(
        "--no-packet-resend",
        action="store_true",
        help="GigE Vision: drop a frame that lost packets instead of asking the camera to resend them",
    )
    part = parser.add_argument_group("part traceability (carried into results, alarms and sinks)")
    part.add_argument(
        "--part-ids",
        default=None,
        metavar="PATH",
        help="with --trigger software: one part id per line (a file, a named pipe, or - for stdin); each line "
        "fires one trigger and its frame carries that part id",
    )
    part.add_argument("--recipe", default=None, help="recipe (product variant) of every frame")
    part.add_argument("--lot", default=None, help="lot / batch of every frame")


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H (four integers), got {text!r}") from exc
    if min(x, y) < 0 or min(w, h) <= 0:
        raise argparse.ArgumentTypeError(f"offsets must be >= 0 and sizes > 0, got {text!r}")
    return x, y, w, h


def part_id_lines(path: str) -> Iterator[str]:
    """Lines of `path` (or stdin for -), read as they arrive."""
    if path == "-":
        yield from sys.stdin
        return
    with open(path, encoding="utf-8") as lines:
        yield from lines


def genicam_options(args: argparse.Namespace) -> dict[str, Any]:
    """GenICamSource's keyword arguments from the command line."""
    return {
        "trigger": args.trigger,
        "trigger_source": args.trigger_source,
        "software_fps": args.fps or 0.0,
        "part_ids": part_id_lines(args.part_ids) if args.part_ids else None,
        "pixel_format": args.pixel_format,
        "exposure_us": args.exposure_us,
        "gain_db": args.gain_db,
        "frame_rate": args.camera_fps,
        "region": args.camera_roi,
        "packet_resend": not args.no_packet_resend,
    }


def frame_traceability(frame: Frame, args: argparse.Namespace) -> Traceability:
    """What the frame and the command line know about the part (nothing is made up)."""
    return Traceability(
        part_id=frame.part_id,
        recipe=args.recipe,
        lot=args.lot,
        frame_counter=frame.frame_counter,
        hardware_timestamp_ns=frame.hardware_timestamp_ns,
    )


class GapReporter:
    """A log line and a metric per gap in the camera's frame counter."""

    def __init__(self, camera_id: str, metrics: Any = None) -> None:
        self.camera_id = camera_id
        self.metrics = metrics
        self.watch = FrameCounterWatch()

    def observe(self, frame: Frame) -> int:
        """Frames missed before this one (0 without a counter)."""
        if frame.frame_counter is None:
            return 0
        previous = self.watch.last
        step = self.watch.observe(frame.frame_counter)
        if step.reset:
            log.warning("camera %s: frame counter restarted (%s -> %d)", self.camera_id, previous, frame.frame_counter)
        if step.missed:
            log.warning(
                "camera %s: %d frame(s) missed (counter %s -> %d)",
                self.camera_id,
                step.missed,
                previous,
                frame.frame_counter,
            )
            if self.metrics is not None:
                self.metrics.camera_frames_missed.add(step.missed, {"camera": self.camera_id})
        return step.missed
