"""Printing and saving evaluation results: the paper-style table, results.json and results.csv.

Tables follow the paper: categories as columns, Mean last, one row per
metric, values x100 with one decimal ("n/a" where a metric is undefined).
For VisA the paper's reference rows (its Tables 1 and 2, F1-max) are printed
beside ours.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.settings import RANDOM_WEIGHT_PROFILES
from worker.eval.metrics import nan_mean
from worker.eval.runner import CategoryResult, EvalRun

# (row label, "group.field" of CategoryResult) for the main table.
METRIC_ROWS: tuple[tuple[str, str], ...] = (
    ("image AUROC", "image.auroc"),
    ("image AP", "image.ap"),
    ("image F1-max", "image.f1_max"),
    ("pixel AUROC", "pixel.auroc"),
    ("pixel AP", "pixel.ap"),
    ("pixel F1-max", "pixel.f1_max"),
    ("pixel AUPRO@0.3", "pixel.aupro"),
)

# The paper (VAND 2023, Variance Vigilance Vanguard), VisA, F1-max x100.
# Table 1: sample (image) level; Table 2: pixel level. "Mean" is the published mean of all 12.
SEED_REFERENCE: dict[str, dict[str, dict[str, float]]] = {
    "image.f1_max": {
        "WinCLIP": dict(
            pcb1=71.0,
            pcb2=67.1,
            pcb3=71.0,
            pcb4=74.9,
            capsules=83.9,
            candle=89.4,
            macaroni1=74.2,
            macaroni2=69.8,
            cashew=88.4,
            chewinggum=94.8,
            fryum=82.7,
            pipe_fryum=80.7,
            Mean=79.0,
        ),
        "APRIL-GAN": dict(
            pcb1=66.9,
            pcb2=70.1,
            pcb3=66.7,
            pcb4=87.3,
            capsules=77.6,
            candle=77.8,
            macaroni1=71.1,
            macaroni2=69.1,
            cashew=84.8,
            chewinggum=93.7,
            fryum=91.7,
            pipe_fryum=87.7,
            Mean=78.7,
        ),
        "Variance Vigilance Vanguard": dict(
            pcb1=74.3,
            pcb2=67.1,
            pcb3=70.2,
            pcb4=87.3,
            capsules=84.9,
            candle=82.1,
            macaroni1=83.3,
            macaroni2=76.9,
            cashew=82.3,
            chewinggum=94.4,
            fryum=84.8,
            pipe_fryum=90.0,
            Mean=81.5,
        ),
    },
    "pixel.f1_max": {
        "WinCLIP": dict(
            pcb1=2.4,
            pcb2=4.7,
            pcb3=10.3,
            pcb4=32.0,
            capsules=9.2,
            candle=22.5,
            macaroni1=7.0,
            macaroni2=1.0,
            cashew=13.2,
            chewinggum=41.1,
            fryum=22.1,
            pipe_fryum=12.3,
            Mean=14.8,
        ),
        "APRIL-GAN": dict(
            pcb1=12.5,
            pcb2=23.4,
            pcb3=21.7,
            pcb4=31.3,
            capsules=48.5,
            candle=39.4,
            macaroni1=35.5,
            macaroni2=13.7,
            cashew=22.9,
            chewinggum=78.5,
            fryum=29.7,
            pipe_fryum=30.4,
            Mean=32.3,
        ),
        "Variance Vigilance Vanguard": dict(
            pcb1=29.5,
            pcb2=11.0,
            pcb3=4.7,
            pcb4=21.7,
            capsules=31.9,
            candle=20.2,
            macaroni1=24.6,
            macaroni2=7.2,
            cashew=24.5,
            chewinggum=63.4,
            fryum=31.3,
            pipe_fryum=19.6,
            Mean=24.2,
        ),
    },
}
SEED_TITLES = {
    "image.f1_max": "Sample-level F1-max (paper Table 1)",
    "pixel.f1_max": "Pixel-level F1-max (paper Table 2)",
}


def metric_value(result: CategoryResult, key: str) -> float:
    """`key` like "image.auroc" or "pixel.aupro" -> the value in [0, 1], NaN if absent."""
    group, name = key.split(".")
    container = getattr(result, group)
    return math.nan if container is None else float(getattr(container, name))


def mean_metrics(results: Sequence[CategoryResult]) -> dict[str, float]:
    """Mean over categories of every metric (categories where it is undefined are left out)."""
    return {key: nan_mean([metric_value(r, key) for r in results]) for _, key in METRIC_ROWS}


def _cell(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def format_table(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Plain-text table: a header of column names, then one labelled row of pre-formatted cells each."""
    label_width = max([len(label) for label, _ in rows] + [0])
    widths = [max(len(col), *(len(cells[i]) for _, cells in rows)) for i, col in enumerate(columns)]
    lines = [" " * label_width + "  " + "  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    for label, cells in rows:
        lines.append(label.ljust(label_width) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def metrics_table(results: Sequence[CategoryResult], mode: str = "zero-shot") -> str:
    """Our metrics: categories as columns, Mean last, values x100; each row labelled with the mode."""
    columns = [r.category for r in results] + ["Mean"]
    means = mean_metrics(results)
    rows = [
        (f"{label} [{mode}]", [_cell(metric_value(r, key)) for r in results] + [_cell(means[key])])
        for label, key in METRIC_ROWS
    ]
    return format_table(columns, rows)


def reference_tables(results: Sequence[CategoryResult]) -> str:
    """The paper's VisA F1-max rows beside ours, for the categories evaluated.

    Mean: the published one when all 12 categories are evaluated, otherwise the
    mean over the evaluated categories (marked "Mean*").
    """
    categories = [r.category for r in results]
    known = [c for c in categories if c in SEED_REFERENCE["image.f1_max"]["WinCLIP"]]
    if not known:
        return ""
    full = set(known) == set(SEED_REFERENCE["image.f1_max"]["WinCLIP"]) - {"Mean"}
    mean_label = "Mean" if full else "Mean*"
    ours = [r for r in results if r.category in known]
    blocks = []
    for key, title in SEED_TITLES.items():
        rows = []
        for method, values in SEED_REFERENCE[key].items():
            mean = values["Mean"] if full else sum(values[c] for c in known) / len(known)
            rows.append((method, [f"{values[c]:.1f}" for c in known] + [f"{mean:.1f}"]))
        our_values = [metric_value(r, key) for r in ours]
        rows.append(("linewatch (this run)", [_cell(v) for v in our_values] + [_cell(nan_mean(our_values))]))
        blocks.append(title + "\n" + format_table(known + [mean_label], rows))
    if not full:
        blocks.append("Mean* = mean over the categories shown, not the paper's 12-category mean.")
    return "\n\n".join(blocks)


def _json_number(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def category_record(result: CategoryResult) -> dict[str, Any]:
    """One category as flat JSON-able data (metrics in [0, 1], None where undefined)."""
    record: dict[str, Any] = {
        "category": result.category,
        "object_name": result.object_name,
        "n_images": result.n_images,
        "n_normal": result.n_normal,
        "n_anomalous": result.n_anomalous,
        "n_pixel_images": result.n_pixel_images,
        "n_anomalous_without_mask": result.n_anomalous_without_mask,
        "seconds": round(result.seconds, 3),
    }
    for _, key in METRIC_ROWS:
        record[key.replace(".", "_")] = _json_number(metric_value(result, key))
    return record


def run_record(run: EvalRun) -> dict[str, Any]:
    """The whole run as the content of results.json."""
    means = mean_metrics(run.categories)
    record: dict[str, Any] = {
        "dataset": run.dataset,
        "root": run.root,
        "profile": run.profile,
        "mode": run.mode,
        "versions": run.versions,
        "bins": run.bins,
        "aupro_fpr_limit": 0.3,
        "n_images": run.n_images,
        "seconds": round(run.seconds, 3),
        "images_per_second": round(run.n_images / run.seconds, 3) if run.seconds > 0 else None,
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "skipped_files": {"count": run.skipped.count, "examples": run.skipped.examples},
        "categories": {r.category: category_record(r) for r in run.categories},
        "mean": {key.replace(".", "_"): _json_number(v) for key, v in means.items()},
        "overlays": {r.category: r.overlays for r in run.categories},
    }
    if run.per_seed:
        record["per_seed"] = {
            str(seed): {r.category: category_record(r) for r in results} for seed, results in run.per_seed.items()
        }
    if run.dataset == "visa":
        record["seed_reference_f1_max_x100"] = SEED_REFERENCE
    return record


CSV_COLUMNS = [
    "category",
    "object_name",
    "n_images",
    "n_normal",
    "n_anomalous",
    "n_pixel_images",
    "n_anomalous_without_mask",
    "seconds",
] + [key.replace(".", "_") for _, key in METRIC_ROWS]


def write_results(run: EvalRun, out_dir: Path) -> tuple[Path, Path]:
    """Write results.json and results.csv (one row per category, then a "Mean" row) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "results.json", out_dir / "results.csv"
    json_path.write_text(json.dumps(run_record(run), indent=2, allow_nan=False) + "\n")
    means = mean_metrics(run.categories)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in run.categories:
            row = category_record(result)
            writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
        mean_row = {"category": "Mean", "n_images": run.n_images}
        mean_row.update({k.replace(".", "_"): "" if not math.isfinite(v) else round(v, 6) for k, v in means.items()})
        writer.writerow(mean_row)
    return json_path, csv_path


def format_report(run: EvalRun) -> str:
    """Everything printed at the end of a run."""
    parts = [
        f"linewatch eval: {run.dataset} at {run.root}, profile {run.profile}, {run.n_images} images, values x100",
        metrics_table(run.categories, run.mode),
    ]
    for seed, results in run.per_seed.items():
        if len(run.per_seed) > 1:
            parts.append(metrics_table(results, f"seed {seed}"))
    if run.dataset == "visa":
        reference = reference_tables(run.categories)
        if reference:
            parts.append(reference)
    rate = run.n_images / run.seconds if run.seconds > 0 else float("nan")
    parts.append(
        f"time {run.seconds:.1f} s ({rate:.2f} images/s), peak RSS {run.peak_rss_mb:.0f} MiB, {run.bins} score bins"
    )
    without_mask = sum(r.n_anomalous_without_mask for r in run.categories)
    if without_mask:
        parts.append(f"{without_mask} anomalous image(s) had no ground-truth mask: image metrics only")
    parts.append(run.skipped.summary())
    if run.profile in RANDOM_WEIGHT_PROFILES:
        parts.append(f"profile {run.profile} uses random-weight models: these numbers are meaningless")
    return "\n\n".join(parts)
