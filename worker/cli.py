"""`linewatch-worker`: inspect images, benchmark, serve from Kafka, evaluate, raise alarms, calibrate, feedback."""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from pathlib import Path

from common.codecs import ImageDecodeError
from common.progress import add_quiet_flag
from common.schemas import FrameMeta, utc_now
from common.settings import PROFILE_NAMES, LinewatchSettings

log = logging.getLogger("linewatch.worker")


def add_inspect_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="inspect image files without a broker; prints one JSON result per image"
    )
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--object", required=True, help="the product as named in prompts, e.g. 'screw'")
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=None,
        help="model profile (default: settings, i.e. 'default' = real weights)",
    )
    parser.add_argument("--foreground", choices=["sam+isnet", "isnet", "none"], default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder for heatmap overlay PNGs")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="apply a record file written by `calibrate --out` (its thresholds and threshold_version)",
    )
    parser.add_argument(
        "--references",
        nargs="+",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="good frames: a reference bank is built from them in memory and fused (models.few_shot_weight)",
    )
    add_quiet_flag(parser)


def _thresholds_from_file(path: Path, object_name: str, limits):
    """(thresholds in force, camera id for the results) from a record file; RecordFileError if unusable."""
    from common.control import parse_scope, thresholds_in_force
    from worker.calibration.record import RecordFileError, read_record_file

    loaded = read_record_file(path)
    camera, scoped_object = parse_scope(loaded.scope)
    if scoped_object is not None and scoped_object != object_name:
        raise RecordFileError(
            f"{path}: calibrated for {scoped_object!r} ({loaded.scope}), not --object {object_name!r}"
        )
    thresholds = thresholds_in_force(
        loaded.scope,
        loaded.record,
        image=limits.threshold,
        pixel=limits.pixel_threshold,
        static_version=limits.threshold_version,
    )
    return thresholds, camera or "cli"


def run_inspect(args, settings: LinewatchSettings) -> int:
    from tqdm import tqdm

    from common.progress import progress_bar
    from worker.calibration.record import RecordFileError
    from worker.calibration.scoring import decode_file
    from worker.inspection.inspector import build_inspector
    from worker.inspection.models.integrity import WeightsMismatch
    from worker.inspection.models.weights import ModelWeightsMissing
    from worker.inspection.overlays import heat_level, overlay_heatmap
    from worker.inspection.types import Frame
    from worker.stream.results import build_result, static_thresholds

    limits = settings.worker
    thresholds, camera_id = static_thresholds(limits), "cli"
    if args.calibration:
        try:
            thresholds, camera_id = _thresholds_from_file(args.calibration, args.object, limits)
        except RecordFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    updates = {key: value for key, value in (("profile", args.profile), ("foreground", args.foreground)) if value}
    model_settings = settings.models.model_copy(update=updates)
    if model_settings.profile != "default":
        print(
            f"linewatch: profile '{model_settings.profile}' uses RANDOM weights; its scores mean nothing",
            file=sys.stderr,
        )
    try:
        inspector = build_inspector(model_settings)
    except (ModelWeightsMissing, WeightsMismatch, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    few_shot = None
    if args.references:
        from worker.inspection.fewshot.build import bank_from_images
        from worker.inspection.fewshot.context import FewShotContext

        try:
            references = [decode_file(path, limits)[0] for path in args.references]
        except (OSError, ImageDecodeError) as exc:
            print(f"error: reference: {exc}", file=sys.stderr)
            return 2
        few_shot = FewShotContext(
            bank=bank_from_images(inspector, references, args.object), bank_label=f"files:{len(references)}"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    pending: list[tuple[Path, FrameMeta, Frame]] = []

    def flush() -> None:
        frames = [frame for _, _, frame in pending]
        for (path, meta, frame), inspection in zip(pending, inspector.inspect(frames)):
            result = build_result(
                meta,
                inspection,
                versions=inspector.versions,
                worker_settings=limits,
                thresholds=thresholds,
                reference_bank=few_shot.bank_label if few_shot else None,
            )
            print(result.model_dump_json(), flush=True)
            if args.out:
                from PIL import Image

                mask = inspection.anomaly_map >= thresholds.pixel
                drawn = overlay_heatmap(frame.image, inspection.anomaly_map, mask, level=heat_level(thresholds.pixel))
                Image.fromarray(drawn).save(args.out / f"{path.stem}_heatmap.png")
        pending.clear()

    for path in progress_bar(args.images, quiet=args.quiet or len(args.images) <= 3, unit="img"):
        try:
            image, content_type = decode_file(path, limits)
        except (OSError, ImageDecodeError) as exc:
            tqdm.write(f"error: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        frame_id = str(uuid.uuid4())
        meta = FrameMeta(
            frame_id=frame_id,
            camera_id=camera_id,
            line_id="cli",
            object_name=args.object,
            captured_at=utc_now(),
            content_type=content_type,
            width=image.shape[1],
            height=image.shape[0],
        )
        pending.append((path, meta, Frame(frame_id, image, meta.object_name, few_shot=few_shot)))
        if len(pending) >= args.batch:
            flush()
    if pending:
        flush()
    if failures:
        print(f"{failures} of {len(args.images)} file(s) could not be inspected", file=sys.stderr)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    from worker.bench.cli import add_bench_parser

    parser = argparse.ArgumentParser(prog="linewatch-worker", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_inspect_parser(subparsers)
    add_bench_parser(subparsers)
    subparsers.add_parser("serve", help="consume frames from Kafka and publish results (docs/deploy/operations.md)")
    try:
        from worker.eval.cli import add_eval_parser

        add_eval_parser(subparsers)
    except ImportError:  # pragma: no cover - eval extras missing
        pass
    from worker.calibration.cli import add_calibrate_parser
    from worker.calibration.feedback_cli import add_feedback_parser

    add_calibrate_parser(subparsers)
    add_feedback_parser(subparsers)

    from worker.stream.control_cli import add_control_parser  # no torch: common/ and kafka only
    from worker.stream.references_cli import add_references_parser  # torch only inside `references add`

    add_control_parser(subparsers)
    add_references_parser(subparsers)

    from worker.inspection.models.cli import add_models_parser

    add_models_parser(subparsers)
    try:
        from worker.alarms.cli import add_alarms_parser

        add_alarms_parser(subparsers)
    except ImportError:  # pragma: no cover
        pass
    from worker.dashboard.cli import add_dashboard_parser

    add_dashboard_parser(subparsers)
    from worker.acl_cli import add_acls_parser

    add_acls_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        settings = LinewatchSettings()
    except Exception as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.worker.keep_freed_memory:
        from worker.memory import keep_freed_memory

        keep_freed_memory()
    if args.command == "inspect":
        return run_inspect(args, settings)
    if args.command == "bench":
        from worker.bench.cli import run_bench_command

        return run_bench_command(args, settings)
    if args.command == "serve":
        from worker.inspection.models.integrity import WeightsMismatch
        from worker.inspection.models.weights import ModelWeightsMissing
        from worker.inspection.value_signing import UnsignedRedisRefused
        from worker.stream.service import InferenceStuck, run_service

        try:
            run_service(settings)
        except InferenceStuck as exc:  # the group already has its partitions back: let the supervisor restart us
            print(f"linewatch-worker: {exc}; exiting so that the process is restarted", file=sys.stderr)
            return 3
        except (ModelWeightsMissing, WeightsMismatch, UnsignedRedisRefused) as exc:  # restarting would not help
            print(f"linewatch-worker: cannot start: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "eval":
        from worker.eval.cli import run_eval

        return run_eval(args)
    if args.command == "references":
        from worker.stream.references_cli import run_references

        return run_references(args, settings)
    if args.command == "control":
        from worker.stream.control_cli import run_control

        return run_control(args, settings)
    if args.command == "models":
        from worker.inspection.models.cli import run_models

        return run_models(args, settings)
    if args.command == "alarms":
        from worker.alarms.cli import run_alarms

        return run_alarms(args)
    if args.command == "dashboard":
        from worker.dashboard.cli import run_dashboard

        return run_dashboard(args, settings)
    if args.command == "calibrate":
        from worker.calibration.cli import run_calibrate

        return run_calibrate(args, settings)
    if args.command == "feedback":
        from worker.calibration.feedback_cli import run_feedback

        return run_feedback(args, settings)
    if args.command == "acls":
        from worker.acl_cli import run_acls

        return run_acls(args, settings)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
