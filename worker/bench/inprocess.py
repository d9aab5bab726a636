"""`linewatch-worker bench`: throughput, latency and per-stage cost of the Inspector.

It also runs the naive reference path (prompt embeddings recomputed for every frame,
CLIPSeg's whole model once per (tile, prompt), one frame at a time) on the same frames
and prints the speed-up. Times are wall-clock on whatever device runs it, so compare
the ratio, not absolute numbers across machines.
"""
from __future__ import annotations

import json
import platform
import resource
import time

import numpy as np
import torch

from common.settings import ModelSettings
from worker.inspection.types import Frame
from worker.inspection.inspector import Inspector
from worker.inspection.models.registry import load_models


def synthetic_frames(count: int, width: int, height: int, seed: int = 0) -> list[Frame]:
    """Frames of parts on a conveyor belt, from the producer's synthetic scene."""
    from producer.sources import SyntheticSource

    source = SyntheticSource(width=width, height=height, seed=seed, defect_rate=0.3, limit=count)
    return [Frame(f"bench-{frame.index}", frame.rgb, "metal washer") for frame in source]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile rounded to 0.01, or None for no values."""
    return round(float(np.percentile(values, q)), 2) if values else None


def warm_up(inspector: Inspector, frames: list[Frame]) -> float:
    """Inspect one frame, which computes and caches the prompt embeddings; returns its ms."""
    start = time.perf_counter()
    inspector.inspect(frames[:1])
    return round((time.perf_counter() - start) * 1000.0, 1)


def run_batches(inspector: Inspector, frames: list[Frame], batch: int) -> dict:
    """Inspect `frames` in batches; a frame's latency is the time of the batch it rode in."""
    latencies, stage_ms = [], {}
    start = time.perf_counter()
    for offset in range(0, len(frames), batch):
        chunk = frames[offset : offset + batch]
        batch_start = time.perf_counter()
        inspections = inspector.inspect(chunk)
        latencies += [(time.perf_counter() - batch_start) * 1000.0] * len(chunk)
        for inspection in inspections:
            for stage, ms in inspection.timings_ms.items():
                stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
    elapsed = time.perf_counter() - start
    return {
        "frames": len(frames),
        "batch": batch,
        "wall_s": round(elapsed, 3),
        "frames_per_s": round(len(frames) / elapsed, 2),
        "ms_per_frame": round(elapsed * 1000.0 / len(frames), 2),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
        "stage_ms_per_frame": {stage: round(ms / len(frames), 2) for stage, ms in sorted(stage_ms.items())},
    }


def run_bench(settings: ModelSettings, frames: int, batch: int, naive_frames: int, width: int, height: int) -> dict:
    models = load_models(settings)
    data = synthetic_frames(frames, width, height)

    optimised = Inspector(models, settings)
    prompt_once_ms = warm_up(optimised, data)
    fast = run_batches(optimised, data, batch)

    naive = Inspector(models, settings, naive=True)
    slow = run_batches(naive, data[: max(1, min(naive_frames, frames))], 1) if naive_frames else None

    report = {
        "profile": models.profile,
        "model_fingerprint": models.fingerprint,
        "foreground": settings.foreground,
        "device": str(models.device) + (f" ({torch.cuda.get_device_name(models.device)})" if models.device.type == "cuda" else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "frame_size": [width, height],
        "first_call_ms_including_prompt_encoding": prompt_once_ms,
        "optimised": fast,
        "naive": slow,
        "speedup_naive_over_optimised": (slow["ms_per_frame"] / fast["ms_per_frame"]) if slow else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    return report


def add_bench_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure Inspector throughput against the naive path")
    parser.add_argument("--profile", choices=["tiny", "base", "default"], default="tiny")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--naive-frames", type=int, default=2, help="frames for the naive path (0 skips it)")
    parser.add_argument("--foreground", choices=["sam+isnet", "isnet", "none"], default="isnet")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice, one per core)")
    parser.add_argument("--through-kafka", action="store_true",
                        help="measure end to end through Kafka and Redis (needs LINEWATCH_KAFKA__BOOTSTRAP_SERVERS)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="--through-kafka: Kafka runs, each between two in-process runs (median reported)")


def run_bench_command(args, settings) -> int:
    model_settings = settings.models.model_copy(update={"profile": args.profile, "foreground": args.foreground, "device": args.device})
    if args.torch_threads is not None:
        torch.set_num_threads(max(1, args.torch_threads))
    if args.through_kafka:
        from worker.bench.kafka_path import run_kafka_bench

        report = run_kafka_bench(settings.model_copy(update={"models": model_settings}), frames=args.frames,
                                 batch=args.batch, width=args.width, height=args.height, rounds=args.rounds)
    else:
        report = run_bench(model_settings, args.frames, args.batch, args.naive_frames, args.width, args.height)
    print(json.dumps(report, indent=2))
    return 0

