"""`linewatch-producer`: read frames from a source and publish them to the frames topic.

Kafka connection settings come from LinewatchSettings (LINEWATCH_KAFKA__* environment
variables or the LINEWATCH_CONFIG YAML file); telemetry exporters from OTEL_* variables.

Exit status: 0 all frames delivered, 1 some frames were refused (too large) or not
delivered, 2 bad arguments or the source/broker could not be opened.
Ctrl-C or SIGTERM stops reading, flushes what was sent, prints the summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from common.argtypes import positive_int
from common.codecs import encode_image
from common.kafka import kafka_failure
from common.redis_acl import warn_if_given_redis_secrets
from common.schemas import utc_now
from common.settings import LinewatchSettings
from common.signals import StopOnSignals
from common.telemetry import Telemetry, TelemetryConfigError, setup_telemetry
from producer.assign import add_assign_parser, assign_partitions
from producer.line_args import GapReporter, add_line_arguments, frame_traceability, genicam_options
from producer.publisher import FramePublisher, FrameTooLargeError, build_frame_meta
from producer.rate import RateLimiter
from producer.sources import CaptureSource, FrameSource, SourceError, open_source
from producer.sources.synthetic import PARTS, truth_headers

log = logging.getLogger("linewatch.producer")

_CONTENT_TYPES = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png"}
PROGRESS_EVERY_S = 10.0


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linewatch-producer",
        description="Publish camera/video/folder/synthetic frames to the linewatch frames topic "
        "(or, with assign-partitions, print an even camera -> partition table).",
        epilog="Kafka settings: LINEWATCH_KAFKA__BOOTSTRAP_SERVERS, LINEWATCH_KAFKA__FRAMES_TOPIC, "
        "LINEWATCH_KAFKA__MAX_MESSAGE_BYTES ... (or LINEWATCH_CONFIG=config.yaml). "
        "Tracing/metrics exporters: OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    src = parser.add_argument_group("source")
    src.add_argument(
        "--source",
        default="synthetic",
        help="folder:PATH | video:PATH | camera:INDEX | rtsp://... | genicam:ID (Aravis id, serial or IP; "
        "genicam: for the first camera found) | synthetic (default: synthetic)",
    )
    src.add_argument("--loop", action="store_true", help="restart a folder or video file at its end")
    src.add_argument("--limit", type=positive_int, default=None, help="stop after this many frames")
    src.add_argument(
        "--fps",
        type=_non_negative_float,
        default=None,
        help="frames per second to publish; 0 = as fast as possible (default: a video file's own rate, "
        "otherwise 0). Live cameras/streams drop frames to keep this rate.",
    )
    syn = parser.add_argument_group("synthetic scene")
    syn.add_argument("--width", type=positive_int, default=640, help="synthetic frame width (default 640)")
    syn.add_argument("--height", type=positive_int, default=480, help="synthetic frame height (default 480)")
    syn.add_argument("--seed", type=int, default=0, help="synthetic scene seed (default 0)")
    syn.add_argument(
        "--defect-rate", type=_fraction, default=0.1, help="fraction of synthetic frames with a defect (default 0.1)"
    )
    syn.add_argument(
        "--parts",
        choices=sorted(PARTS),
        default="mixed",
        help="what runs on the belt: mixed (every colour, caps and washers; default), or one product: washers, caps",
    )
    meta = parser.add_argument_group("frame metadata and encoding")
    meta.add_argument("--camera", default="cam-1", help="camera id, also the message key (default cam-1)")
    meta.add_argument("--line", default="line-1", help="production line id (default line-1)")
    meta.add_argument(
        "--object",
        default=None,
        help="object name used in the prompts, e.g. 'metal nut' (default: 'washer' for synthetic, else 'object')",
    )
    meta.add_argument(
        "--format",
        choices=["auto", "jpeg", "png"],
        default="auto",
        help="encoding; auto sends folder images unchanged and encodes everything else as JPEG (default auto)",
    )
    meta.add_argument("--quality", type=int, default=90, choices=range(1, 101), metavar="1..100", help="JPEG quality")
    add_line_arguments(parser)
    kafka = parser.add_argument_group("kafka (overrides the settings)")
    kafka.add_argument("--topic", default=None, help="frames topic (default: LINEWATCH_KAFKA__FRAMES_TOPIC)")
    kafka.add_argument("--bootstrap-servers", default=None, help="host:port[,host:port]")
    kafka.add_argument("--no-create-topic", action="store_true", help="do not create the topic when it is missing")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_assign_parser(parser.add_subparsers(dest="command", metavar="assign-partitions"))
    return parser


def _settings(args: argparse.Namespace) -> LinewatchSettings:
    settings = LinewatchSettings()
    updates: dict[str, Any] = {}
    if args.topic:
        updates["frames_topic"] = args.topic
    if args.bootstrap_servers:
        updates["bootstrap_servers"] = args.bootstrap_servers
    if updates:
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update=updates)})
    return settings


def run(
    args: argparse.Namespace,
    settings: LinewatchSettings,
    *,
    stop: threading.Event | None = None,
    telemetry: Telemetry | None = None,
    out: Any = None,
) -> int:
    """The producer loop (everything `main` does after parsing); callable from Python."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    content_type_forced = _CONTENT_TYPES.get(args.format)
    try:
        source: FrameSource = open_source(
            args.source,
            loop=args.loop,
            width=args.width,
            height=args.height,
            seed=args.seed,
            defect_rate=args.defect_rate,
            limit=args.limit,
            parts=args.parts,
            genicam=genicam_options(args) if args.source.strip().startswith("genicam") else None,
        )
    except SourceError as exc:
        print(f"linewatch-producer: {exc}", file=sys.stderr)
        return 2
    object_name = args.object or ("washer" if args.source.strip().startswith("synthetic") else "object")
    fps = args.fps
    if fps is None:
        fps = source.fps if isinstance(source, CaptureSource) and not source.live else 0.0
    try:
        publisher = FramePublisher(settings.kafka, telemetry=telemetry, ensure_topic=not args.no_create_topic)
    except Exception as exc:  # NoBrokersAvailable, auth errors ...
        source.close()
        print(f"linewatch-producer: cannot connect to {kafka_failure(settings.kafka, exc)}", file=sys.stderr)
        return 2
    limiter = RateLimiter(fps, stop=stop)
    log.info(
        "publishing %s to %s at %s (camera %s, line %s, object %r, limit %s bytes/frame)",
        source.name,
        publisher.topic,
        f"{fps:g} fps" if fps else "full speed",
        args.camera,
        args.line,
        object_name,
        f"{publisher.max_bytes:,}",
    )
    gaps = GapReporter(args.camera, telemetry.metrics if telemetry is not None else None)
    taken = 0
    error: str | None = None
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    try:
        for frame in source:
            if stop.is_set():
                break
            gaps.observe(frame)  # before the rate limit: frames it drops are not the camera's
            if source.live:
                if not limiter.ready():
                    continue  # a live camera keeps its own pace; drop frames above --fps
            elif not limiter.wait():
                break
            if frame.data is not None and frame.content_type and content_type_forced is None:
                data, content_type = frame.data, frame.content_type
            else:
                content_type = content_type_forced or "image/jpeg"
                data = encode_image(frame.rgb, content_type, quality=args.quality)
            meta = build_frame_meta(
                camera_id=args.camera,
                line_id=args.line,
                object_name=object_name,
                content_type=content_type,  # type: ignore[arg-type]
                width=frame.width,
                height=frame.height,
                # A live frame was captured when it was read; a replayed one when it is emitted.
                captured_at=frame.captured_at if source.live else utc_now(),
                traceability=frame_traceability(frame, args),
            )
            try:
                publisher.publish(data, meta, truth_headers(frame))
            except FrameTooLargeError as exc:
                print(f"linewatch-producer: {exc}", file=sys.stderr)
            taken += 1
            if args.limit is not None and taken >= args.limit:
                break
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                log.info("progress: %s", publisher.stats.summary())
    except KeyboardInterrupt:
        log.info("interrupted: flushing")
    except Exception as exc:  # a source that broke mid-stream: still flush what was sent
        log.error("producer stopped: %s: %s", type(exc).__name__, exc)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        source.close()
    stats = _finish(publisher, out)
    if gaps.watch.gaps:
        print(
            f"linewatch-producer: camera frame counter: {gaps.watch.missed} frame(s) missed in {gaps.watch.gaps} gap(s)",
            file=out,
            flush=True,
        )
    if error is not None:
        return 1
    return 0 if stats.refused == 0 and stats.failed == 0 and stats.submitted == stats.sent else 1


def _finish(publisher: FramePublisher, out: Any) -> Any:
    try:
        publisher.close()
    except Exception as exc:  # a flush that timed out: the summary says what was not acknowledged
        log.error("flush failed: %s: %s", type(exc).__name__, exc)
    stats = publisher.stats
    print(f"linewatch-producer: {stats.summary()}", file=out, flush=True)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "assign-partitions":
        return assign_partitions(args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(args)
    except Exception as exc:  # pydantic ValidationError, missing LINEWATCH_CONFIG file
        print(f"linewatch-producer: invalid settings: {exc}", file=sys.stderr)
        return 2
    warn_if_given_redis_secrets(settings.redis, "the producer")
    telemetry = None
    if settings.telemetry.enabled:
        try:
            telemetry = setup_telemetry("linewatch-producer")
        except TelemetryConfigError as exc:
            print(f"linewatch-producer: {exc}", file=sys.stderr)
            return 2
    stop = threading.Event()
    try:
        with StopOnSignals(stop, "stopping after flushing"):
            return run(args, settings, stop=stop, telemetry=telemetry)
    finally:
        if telemetry is not None:
            telemetry.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
