"""`linewatch-worker bench`: the command line of both benchmarks (in-process, and `--through-kafka`)."""

from __future__ import annotations

import json
import sys

from common.settings import PROFILE_NAMES


def add_bench_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure Inspector throughput against the naive path")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="tiny")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--naive-frames", type=int, default=2, help="frames for the naive path (0 skips it)")
    parser.add_argument("--foreground", choices=["sam+isnet", "isnet", "none"], default="isnet")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice, one per core)",
    )
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default=None)
    parser.add_argument("--sam-points", choices=["salient", "grid"], default=None, help="default: the setting")
    parser.add_argument("--instances", choices=["objects", "components"], default=None, help="default: the setting")
    parser.add_argument("--tiles", choices=["instance", "shared"], default=None, help="default: the setting")
    parser.add_argument(
        "--isnet-precision",
        choices=["float", "int8"],
        default=None,
        help="default: the setting (int8: models quantize-isnet)",
    )
    parser.add_argument(
        "--sam-image-size",
        type=int,
        default=None,
        help="SAM encoder input side (models.sam_image_size; default: the setting)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="frames/s and p50/p99 per batch size (--sweep-batches) for isnet and sam+isnet (the GPU benchmark)",
    )
    parser.add_argument("--sweep-batches", default="1,8,32", help="--sweep: comma-separated batch sizes")
    parser.add_argument("--sweep-foregrounds", default="isnet,sam+isnet", help="--sweep: comma-separated")
    parser.add_argument(
        "--precision-probe",
        action="store_true",
        help="per model: ms per image in fp32, bf16 autocast and bf16 weights (--batch images, --rounds repeats)",
    )
    parser.add_argument(
        "--through-kafka",
        action="store_true",
        help="measure end to end through Kafka and Redis (needs LINEWATCH_KAFKA__BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--guarantees",
        default=None,
        metavar="BATCHES",
        help="--through-kafka: exactly-once vs at-least-once side by side at these comma-separated batch sizes "
        "(frames/s, paced latency p50/p99 and what exactly-once costs)",
    )
    parser.add_argument(
        "--emulate-frame-ms",
        type=float,
        default=None,
        metavar="MS",
        help="--guarantees: no models; an inspector that waits MS per frame of a batch (a GPU's pace, the CPU "
        "left to the Kafka path)",
    )
    parser.add_argument(
        "--few-shot",
        action="store_true",
        help="cost of reference banks (K = --shots) and of the rolling pool (M = --pool): ms per frame and memory",
    )
    parser.add_argument("--shots", default="0,1,4,16", help="--few-shot: reference frame counts to measure")
    parser.add_argument("--pool", default="32,128", help="--few-shot: pool sizes to measure")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="--through-kafka: Kafka runs, each between two in-process runs (median reported); with --guarantees: "
        "runs of each guarantee, interleaved",
    )


def run_bench_command(args, settings) -> int:
    import torch  # heavy: only when the command runs

    update = {"profile": args.profile, "foreground": args.foreground, "device": args.device}
    for name in ("precision", "sam_points", "instances", "tiles", "isnet_precision", "sam_image_size"):
        if getattr(args, name) is not None:
            update[name] = getattr(args, name)
    try:  # validated, so a bad flag gets the setting's own message
        model_settings = type(settings.models).model_validate({**settings.models.model_dump(), **update})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.torch_threads is not None:
        torch.set_num_threads(max(1, args.torch_threads))
    if args.few_shot:
        from worker.bench.fewshot import run_fewshot_bench

        counts = {
            name: tuple(int(n) for n in getattr(args, name).split(",") if n.strip()) for name in ("shots", "pool")
        }
        report = run_fewshot_bench(
            model_settings, args.frames, args.batch, args.width, args.height, counts["shots"], counts["pool"]
        )
    elif args.precision_probe:
        from worker.bench.precision_probe import run_precision_probe

        report = run_precision_probe(model_settings, args.batch, args.rounds)
    elif args.sweep:
        from worker.bench.sweep import run_sweep

        report = run_sweep(
            model_settings,
            [int(b) for b in args.sweep_batches.split(",")],
            args.sweep_foregrounds.split(","),
            args.rounds,
            args.width,
            args.height,
        )
    elif args.through_kafka and args.guarantees:
        from worker.bench.guarantees import run_guarantee_bench

        report = run_guarantee_bench(
            settings.model_copy(update={"models": model_settings}),
            frames=args.frames,
            batches=[int(b) for b in args.guarantees.split(",")],
            width=args.width,
            height=args.height,
            rounds=args.rounds,
            emulate_frame_ms=args.emulate_frame_ms,
        )
    elif args.through_kafka:
        from worker.bench.kafka_path import run_kafka_bench

        report = run_kafka_bench(
            settings.model_copy(update={"models": model_settings}),
            frames=args.frames,
            batch=args.batch,
            width=args.width,
            height=args.height,
            rounds=args.rounds,
        )
    else:
        from worker.bench.inprocess import run_bench

        report = run_bench(model_settings, args.frames, args.batch, args.naive_frames, args.width, args.height)
    print(json.dumps(report, indent=2))
    return 0
