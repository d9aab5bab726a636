"""`linewatch-worker bench` (worker/bench/cli.py): throughput, latency and per-stage cost of the Inspector.

It also runs the naive reference path (prompt embeddings recomputed for every frame,
CLIPSeg's whole model once per (tile, prompt), one frame at a time) on the same frames
and prints the speed-up. Times are wall-clock on whatever device runs it, so compare
the ratio, not absolute numbers across machines.
"""

from __future__ import annotations

import platform

import numpy as np
import torch

from common.settings import ModelSettings
from worker.bench.units import (
    decoder_points,
    precision_deviation,
    reference_check,
    reference_tile_ms,
    with_tile_units,
)
from worker.inspection.inspector import Inspector
from worker.inspection.measure import StageClock, peak_rss_mb
from worker.inspection.models.precision import cpu_flags, timed_bf16_speedup
from worker.inspection.models.registry import load_models
from worker.inspection.types import Frame
from worker.memory import freed_memory_kept


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
    clock = StageClock()
    inspector.inspect(frames[:1])
    return round(clock.elapsed_ms(), 1)


def run_batches(inspector: Inspector, frames: list[Frame], batch: int) -> dict:
    """Inspect `frames` in batches; a frame's latency is the time of the batch it rode in."""
    latencies, stages = [], StageClock()
    for offset in range(0, len(frames), batch):
        chunk = frames[offset : offset + batch]
        batch_clock = StageClock()
        inspections = inspector.inspect(chunk)
        latencies += [batch_clock.elapsed_ms()] * len(chunk)
        for inspection in inspections:
            for stage, ms in inspection.timings_ms.items():
                stages.ms[stage] += ms
    elapsed = stages.elapsed_s()
    return {
        "frames": len(frames),
        "batch": batch,
        "wall_s": round(elapsed, 3),
        "frames_per_s": round(len(frames) / elapsed, 2),
        "ms_per_frame": round(elapsed * 1000.0 / len(frames), 2),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
        "stage_ms_per_frame": {stage: round(ms / len(frames), 2) for stage, ms in sorted(stages.ms.items())},
    }


def device_name(device: torch.device) -> str:
    """The device and, for CUDA, its name; for the CPU, its processor and thread count."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_bench(settings: ModelSettings, frames: int, batch: int, naive_frames: int, width: int, height: int) -> dict:
    models = load_models(settings)
    data = synthetic_frames(frames, width, height)
    reference_ms = reference_tile_ms(models.device)

    optimised = Inspector(models, settings)
    prompt_once_ms = warm_up(optimised, data)
    warm_calls = optimised.text_encoder_calls
    optimised.sam_decoder_points = optimised.tiles_planned = 0
    fast = with_tile_units(run_batches(optimised, data, batch), reference_ms)
    encoder_calls_when_warm = optimised.text_encoder_calls - warm_calls  # 0: the cache answers every prompt

    naive = Inspector(models, settings, naive=True)
    slow = run_batches(naive, data[: max(1, min(naive_frames, frames))], 1) if naive_frames else None
    if slow:
        with_tile_units(slow, reference_ms)
    reference = reference_check(reference_ms, reference_tile_ms(models.device))  # did the load change meanwhile?

    report = {
        "profile": models.profile,
        "model_fingerprint": models.fingerprint,
        "foreground": settings.foreground,
        "device": device_name(models.device),
        "precision": models.precision,
        "bf16_matmul_speedup": timed_bf16_speedup(settings.precision, models.device.type, cpu_flags()),
        "sam_points": settings.sam_points if models.sam is not None else None,
        "sam_image_size": models.sam.sam.image_encoder.img_size if models.sam is not None else None,
        "instances": settings.instances,
        "tiles": settings.tiles,
        "isnet_precision": settings.isnet_precision if models.isnet is not None else None,
        "tiles_per_frame": optimised.tiles_planned / len(data),
        "frame_size": [width, height],
        "reference_tile_ms": reference_ms,
        "tile_units_per_frame": fast["tile_units_per_frame"],
        "reference_check": reference,
        "sam_decoder_points": decoder_points(optimised, models, len(data)),
        "precision_deviation_vs_fp32": precision_deviation(models, settings, data[:2]),
        "first_call_ms_including_prompt_encoding": prompt_once_ms,
        "optimised": fast,
        "naive": slow,
        "speedup_naive_over_optimised": (slow["ms_per_frame"] / fast["ms_per_frame"]) if slow else None,
        "text_encoder_calls_after_warm_up": encoder_calls_when_warm,
        "peak_rss_mb": peak_rss_mb(),
        "keep_freed_memory": freed_memory_kept(),  # worker.keep_freed_memory, applied by the CLI
    }
    return report
