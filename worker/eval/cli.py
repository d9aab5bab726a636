"""`linewatch-worker eval`: the paper's table on MVTec AD, VisA or a plain folder.

Wiring (worker/cli.py)::

    from worker.eval.cli import add_eval_parser
    add_eval_parser(subparsers)          # registers "eval" with func=run_eval
    ...
    args = parser.parse_args(argv); return args.func(args)

Standalone: `python -m worker.eval.cli --dataset mvtec --root /data/mvtec_ad`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.argtypes import positive_int
from common.progress import add_quiet_flag, progress_bar
from common.settings import PROFILE_NAMES
from worker.eval.datasets import DATASET_KINDS, DatasetLayoutError, open_dataset, select_categories
from worker.eval.fewshot import context_for, evaluate_modes, mode_label
from worker.eval.metrics import DEFAULT_BINS
from worker.eval.report import format_report, write_results
from worker.eval.runner import (
    EvalOptions,
    EvalRun,
    InspectorLike,
    SkippedFiles,
    count_samples,
    evaluate_category,
    versions_as_dict,
)
from worker.inspection.measure import StageClock, peak_rss_mb

EXIT_LAYOUT_ERROR = 2

InspectorFactory = Callable[[Any], InspectorLike]


class InspectorUnavailable(RuntimeError):
    """worker.inspection.inspector cannot be imported."""


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--dataset", choices=DATASET_KINDS, required=True, help="dataset layout of --root")
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder (layouts: docs/evaluation.md)")
    parser.add_argument(
        "--categories", default=None, help="comma-separated categories to evaluate (default: all found)"
    )
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=None,
        help="model profile (default: the configured one; tiny = random weights, tests only)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the configured one)")
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="at most N images per category, evenly spread over normal and defect folders",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/eval"),
        help="folder for results.json, results.csv and overlays (default: out/eval)",
    )
    parser.add_argument(
        "--object-name",
        default=None,
        help="object name used in prompts for every category (default: from the category)",
    )
    parser.add_argument(
        "--worst",
        type=_non_negative_int,
        default=3,
        help="overlays of the N worst false positives and false negatives per category (0: none)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=4, help="frames per Inspector call")
    parser.add_argument(
        "--bins", type=positive_int, default=DEFAULT_BINS, help="score bins of the streaming pixel metrics"
    )
    add_quiet_flag(parser, "--no-progress")
    parser.add_argument(
        "--shots", type=_non_negative_int, default=0, help="few-shot: K references from each category's train/good"
    )
    parser.add_argument("--seeds", default="0", help="few-shot: comma-separated seeds of the reference draws")
    parser.add_argument(
        "--pool", type=_non_negative_int, default=0, help="label-free: score against a rolling pool of M test images"
    )
    parser.set_defaults(func=run_eval)
    return parser


def add_eval_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `eval` subcommand on an argparse subparsers object; sets func=run_eval."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate on MVTec AD / VisA / a folder (the paper's table)",
        description="Zero-shot evaluation: image and pixel AUROC, AP, F1-max and AUPRO per category.",
    )
    return _configure(parser)


def model_settings_for(args: argparse.Namespace) -> Any:
    """The configured ModelSettings (LINEWATCH_* / YAML) with --profile and --device applied."""
    from common.settings import LinewatchSettings

    update = {}
    if args.profile:
        update["profile"] = args.profile
    if args.device:
        update["device"] = args.device
    return LinewatchSettings().models.model_copy(update=update)


def default_inspector_factory(model_settings: Any) -> InspectorLike:
    """worker.inspector.build_inspector, imported late so `--help` needs no model code."""
    try:
        from worker.inspection.inspector import build_inspector
    except ImportError as exc:  # the Inspector module is missing or broken
        raise InspectorUnavailable(f"cannot import worker.inspector.build_inspector: {exc}") from exc
    return build_inspector(model_settings)


def _progress_bar(total: int, quiet: bool) -> Any:
    return progress_bar(total=total, unit="img", desc="eval", quiet=quiet)


def run_eval(args: argparse.Namespace, inspector_factory: InspectorFactory | None = None) -> int:
    """Run the evaluation described by parsed `args`; print the report; write results to --out.

    Returns 0 on success, 1 when the Inspector cannot be imported, 2 when the dataset root or layout is wrong (message on stderr).
    inspector_factory(model_settings) -> inspector; defaults to worker.inspector.build_inspector.
    """
    clock = StageClock()
    wanted = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    try:
        reader = open_dataset(args.dataset, args.root)
        categories = select_categories(reader, wanted)
        totals = {c: count_samples(reader, c, args.limit) for c in categories}
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LAYOUT_ERROR

    model_settings = model_settings_for(args)
    try:
        inspector = (inspector_factory or default_inspector_factory)(model_settings)
    except InspectorUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    options = EvalOptions(
        batch_size=args.batch_size,
        limit=args.limit,
        object_name=args.object_name,
        worst=args.worst,
        bins=args.bins,
        out_dir=args.out,
    )
    skipped = SkippedFiles()
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()] if args.shots else [0]
    mode, per_seed = mode_label(args.shots, args.pool, seeds), {}
    progress = _progress_bar(sum(totals.values()) * len(seeds), quiet=args.quiet)

    def evaluate(category: str, few_shot):
        progress.set_postfix_str(category)
        return evaluate_category(reader, category, inspector, options, skipped, progress, few_shot=few_shot)

    def make_context(category: str, seed: int):
        if not (args.shots or args.pool):
            return None
        modes = {"shots": args.shots, "pool": args.pool, "seed": seed, "object_name": args.object_name}
        return context_for(inspector, reader, category, **modes)

    try:
        results, per_seed = evaluate_modes(evaluate, make_context, categories, seeds)
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LAYOUT_ERROR
    finally:
        progress.close()

    run = EvalRun(
        dataset=args.dataset,
        root=str(args.root),
        profile=model_settings.profile,
        versions=versions_as_dict(getattr(inspector, "versions", None)),
        bins=args.bins,
        categories=results,
        skipped=skipped,
        seconds=clock.elapsed_s(),
        peak_rss_mb=peak_rss_mb(),
        mode=mode,
        per_seed=per_seed if args.shots else {},
    )
    json_path, csv_path = write_results(run, args.out)
    print(format_report(run))
    print(f"\nwrote {json_path} and {csv_path}; overlays under {args.out}/<category>/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="linewatch-worker eval", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
