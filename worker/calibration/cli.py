"""`linewatch-worker calibrate`: thresholds from normal frames at a stated false-alarm rate.

    linewatch-worker calibrate --object "metal nut" --target-fpr 0.01 --out cal.json good/*.png
    linewatch-worker calibrate --object bottle --camera cam-3 --from-topic --frames 300 --target-fpr 0.01 --publish
    linewatch-worker calibrate --object bottle --camera cam-3 --from-topic --frames 300 --from-feedback \
        --target-fpr 0.01 --publish

Exit codes: 0 calibrated; 2 bad arguments, too few frames for the rate, or models missing;
1 the broker could not be read or written.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from common.argtypes import positive_int
from common.calibration import TooFewFrames, conformal_rank, frames_needed
from common.control import scope_key
from common.progress import add_quiet_flag, bars_wanted
from common.settings import PROFILE_NAMES, LinewatchSettings


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a false-alarm rate is within (0, 1), got {value:g}")
    return value


def _default_user() -> str:
    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError):
        return "unknown"


def add_calibrate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="set a scope's thresholds from good frames at a target false-alarm rate (docs/guides/calibrate.md)",
        description="Inspect normal (good) frames and set the image and pixel thresholds by the conformal "
        "bound, so that the false-alarm rate on new good frames is at most --target-fpr.",
    )
    parser.add_argument("images", nargs="*", type=Path, help="good frames (JPEG/PNG files)")
    parser.add_argument("--object", required=True, help="the product as named in prompts")
    parser.add_argument("--camera", default=None, help="calibrate camera:<id>/object:<name> (else object:<name>)")
    parser.add_argument("--target-fpr", type=_rate, required=True, help="false-alarm rate to bound, e.g. 0.01")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None)
    parser.add_argument("--foreground", choices=["sam+isnet", "isnet", "none"], default=None)
    parser.add_argument("--from-topic", action="store_true", help="take the camera's newest --frames frames")
    parser.add_argument("--frames", type=positive_int, default=None, help="how many frames --from-topic takes")
    parser.add_argument("--from-feedback", action="store_true", help="add the scope's false alarms as normal frames")
    parser.add_argument("--out", type=Path, default=None, help='write {"scope", "record"} JSON here')
    parser.add_argument("--version", type=positive_int, default=None, help="record version in --out (default 1)")
    parser.add_argument("--publish", action="store_true", help="send the record to the control topic (version + 1)")
    parser.add_argument("--by", default=None, help="who calibrates (default: the login name)")
    parser.add_argument("--batch", type=positive_int, default=4, help="frames per Inspector call")
    add_quiet_flag(parser, "--no-progress")


def _check_arguments(args) -> str | None:
    if not (args.images or args.from_topic or args.from_feedback):
        return "give good frames: image files, --from-topic --frames N, and/or --from-feedback"
    if args.from_topic and (args.camera is None or args.frames is None):
        return "--from-topic needs --camera and --frames"
    if args.frames is not None and not args.from_topic:
        return "--frames goes with --from-topic"
    if args.publish and args.version is not None:
        return "--publish numbers the version itself (the version in force + 1); leave out --version"
    return None


def run_calibrate(args, settings: LinewatchSettings) -> int:
    from kafka.errors import KafkaError

    from common.kafka import kafka_failure

    problem = _check_arguments(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    scope = scope_key(args.camera, args.object)
    try:
        return _calibrate(args, settings, scope)
    except (KafkaError, TimeoutError) as exc:
        print(f"error: {kafka_failure(settings.kafka, exc)}", file=sys.stderr)
        return 1


def _calibrate(args, settings: LinewatchSettings, scope: str) -> int:
    from common.audit import publish_change
    from common.control_topic import read_control_topic
    from worker.calibration import sources
    from worker.calibration.record import calibration_record, write_record_file
    from worker.calibration.scoring import score_normal_frames

    gathered = sources.from_files(args.images, args.object, settings)
    if args.from_topic:
        gathered.extend(sources.from_topic(args.camera, args.frames, args.object, settings))
    if args.from_feedback:
        before = len(gathered.frames)
        gathered.extend(sources.from_feedback(args.camera, args.object, settings))
        print(f"{len(gathered.frames) - before} false-alarm frame(s) added from feedback", file=sys.stderr)
    for line in gathered.problems:
        print(f"skipped: {line}", file=sys.stderr)
    n, needed = len(gathered.frames), frames_needed(args.target_fpr)
    if n < needed:  # refuse before loading any model
        print(f"error: {TooFewFrames(n, needed, args.target_fpr)} (give {needed - n} more)", file=sys.stderr)
        return 2

    inspector = _build_inspector(args, settings)
    if inspector is None:
        return 2
    scores = score_normal_frames(inspector, gathered.frames, batch=args.batch, progress=bars_wanted(args.quiet))
    by = args.by or _default_user()
    table = read_control_topic(settings.kafka)[0] if args.publish else None
    version = table.next_version(scope) if table is not None else (args.version or 1)
    record = calibration_record(
        scores.raw,
        scores.pixel,
        target_fpr=args.target_fpr,
        by=by,
        version=version,
        base=table.records.get(scope) if table is not None else None,
    )
    print(
        f"calibrated {scope} on {n} normal frames at target false-alarm rate {args.target_fpr:g}: "
        f"image threshold {record.image_threshold:.6f} (score rank {conformal_rank(n, args.target_fpr)} of {n}), "
        f"pixel threshold {record.pixel_threshold:.6f}; raw scores "
        + ", ".join(f"{k} {v:.4f}" for k, v in record.calibration.quantiles.items()),
        file=sys.stderr,
    )
    if args.out:
        write_record_file(args.out, scope, record)
        print(f"wrote {args.out}: scope {scope} version {record.version}")
    if args.publish:
        before = table.records.get(scope)
        reason = f"calibrated on {n} normal frames at target false-alarm rate {args.target_fpr:g}"
        audit = publish_change(settings.kafka, scope, before, record, "calibrate", by=by, reason=reason)
        partition, offset = audit.partition, audit.offset
        print(
            f"published scope {scope} version {record.version} to {settings.kafka.control_topic} "
            f"(partition {partition}, offset {offset})"
        )
    if not (args.out or args.publish):
        print(record.model_dump_json())
    return 0


def _build_inspector(args, settings: LinewatchSettings):
    from worker.inspection.inspector import build_inspector
    from worker.inspection.models.weights import ModelWeightsMissing

    updates = {k: v for k, v in (("profile", args.profile), ("foreground", args.foreground)) if v}
    model_settings = settings.models.model_copy(update=updates)
    if model_settings.profile != "default":
        print(f"linewatch: profile '{model_settings.profile}' uses RANDOM weights", file=sys.stderr)
    try:
        return build_inspector(model_settings)
    except (ModelWeightsMissing, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
