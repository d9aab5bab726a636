"""`linewatch-worker models pull|check|quantize-isnet`: fetch the real weights once; say what a worker
would load; make IS-Net's int8 graph from the line's frames.

`pull` is the only command that opens a network connection, and only for the files it was asked for.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.progress import add_quiet_flag, bars_wanted, progress_bar
from common.settings import PROFILE_NAMES, LinewatchSettings, ModelSettings


def add_models_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="fetch real weights (pull), show what a worker would load (check), make int8 IS-Net (quantize-isnet)",
    )
    commands = parser.add_subparsers(dest="models_command", required=True)
    pull = commands.add_parser("pull", help="download CLIP, CLIPSeg and SAM at their pinned revisions, digests checked")
    pull.add_argument(
        "--sam", choices=["vit_b", "vit_l", "vit_h"], default=None, help="SAM backbone (default: setting)"
    )
    pull.add_argument("--dest", type=Path, default=None, help="models folder (default: LINEWATCH_MODELS__MODELS_DIR)")
    pull.add_argument("--pins", type=Path, default=None, help="pins file (default: setting models.pins_file)")
    trust = pull.add_mutually_exclusive_group()
    trust.add_argument(
        "--update-pins", action="store_true", help="record the digests of files without a pin in the pins file"
    )
    trust.add_argument(
        "--require-pins",
        action="store_true",
        help="refuse files with neither a pin nor a lock entry (default: fetch them and lock what was fetched)",
    )
    add_quiet_flag(pull)
    check = commands.add_parser(
        "check", help="for each model: file found, real or random, fingerprint, what is missing"
    )
    check.add_argument("--profile", choices=PROFILE_NAMES, default=None)
    check.add_argument(
        "--no-load", action="store_true", help="only look for the files and their digests; do not build the models"
    )
    quantize = commands.add_parser(
        "quantize-isnet",
        help="write IS-Net's int8 graph (models.isnet_precision=int8), calibrated on frames of the line",
    )
    frames = quantize.add_mutually_exclusive_group(required=True)
    frames.add_argument("--images", type=Path, help="folder of the line's frames (png, jpg, bmp), good parts are fine")
    frames.add_argument(
        "--synthetic", type=int, metavar="N", help="N synthetic belt frames instead (to try it out, not for a line)"
    )
    quantize.add_argument("--limit", type=int, default=32, help="at most this many frames from --images (default 32)")
    add_quiet_flag(quantize)


def run_models(args, settings: LinewatchSettings) -> int:
    if args.models_command == "pull":
        return run_pull(args, settings.models)
    if args.models_command == "quantize-isnet":
        return run_quantize_isnet(args, settings.models)
    return run_check(args, settings.models)


def run_pull(args, settings: ModelSettings) -> int:
    from worker.inspection.models import lock
    from worker.inspection.models.catalog import load_catalog, save_catalog, sources_for
    from worker.inspection.models.download import DigestMismatch, UnpinnedFile, fetch_hub, fetch_url
    from worker.inspection.models.integrity import pins_file

    pins = args.pins or pins_file(settings)
    if not bars_wanted(args.quiet):  # huggingface_hub draws its own bars
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    catalog = load_catalog(pins)
    dest = args.dest or settings.models_dir
    locks = lock.load_lock(dest)
    sam_type = args.sam or settings.sam_type
    failures = 0
    for pinned in sources_for(catalog, sam_type):
        source, _ = lock.locked(pinned, locks)  # the first pull's revision and digests hold where pins are null
        try:
            if source.kind == "hub":
                revision, fetched = fetch_hub(source, dest, require_pins=args.require_pins)
            else:
                revision, fetched = (
                    None,
                    fetch_url(source, settings.sam_base_url, dest, require_pins=args.require_pins, quiet=args.quiet),
                )
        except (DigestMismatch, UnpinnedFile) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        except Exception as exc:  # network and hub errors: say which model, go on with the others
            print(f"error: {source.key}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failures += 1
            continue
        where = f"{source.repo}@{revision}" if revision else settings.sam_base_url
        for item in fetched:
            print(f"{source.key}: {item.path}  ({item.size / 2**20:.1f} MiB, sha256 {item.sha256}, from {where})")
        unpinned = {item.path.name: item.sha256 for item in fetched if pinned.files[item.path.name] is None}
        if args.update_pins:
            catalog[source.key] = pinned.with_pins(revision, {item.path.name: item.sha256 for item in fetched})
        elif unpinned:
            written = lock.record(dest, source.key, revision if pinned.revision is None else None, unpinned)
            print(f"{source.key}: no pin for {', '.join(sorted(unpinned))}: trusted on first use, locked in {written}")
    if args.update_pins:
        save_catalog(catalog, pins)
        print(f"pins written to {pins}: review the diff before committing it")
    if failures:
        print(f"{failures} model(s) not fetched", file=sys.stderr)
        return 1
    print(f"all weights in {dest}; `linewatch-worker models check` shows what a worker will load")
    return 0


def _found_rows(settings: ModelSettings) -> list[tuple[str, Path | None, str]]:
    """(model, path found or None, how to provide it) for the models the settings need."""
    from worker.inspection.models import locate
    from worker.inspection.models.isnet import default_isnet_path

    rows = [
        ("clip", locate.find_clip(settings), locate.clip_expected(settings)),
        ("clipseg", locate.find_clipseg(settings), locate.clipseg_expected(settings)),
    ]
    if settings.foreground == "sam+isnet":
        rows.append(("sam", locate.find_sam(settings), locate.sam_expected(settings)))
    if settings.foreground != "none":
        isnet = settings.isnet_path or default_isnet_path(settings.models_dir)
        rows.append(
            ("isnet", isnet if isnet.is_file() else None, f"{isnet} (`make models`), or LINEWATCH_MODELS__ISNET_PATH")
        )
        if settings.isnet_precision == "int8":
            from worker.inspection.models.isnet_int8 import int8_path

            int8 = int8_path(isnet)
            fix = f"{int8} (`linewatch-worker models quantize-isnet --images DIR`)"
            rows.append(("isnet-int8", int8 if int8.is_file() else None, fix))
    return rows


def run_check(args, settings: ModelSettings) -> int:
    if args.profile:
        settings = settings.model_copy(update={"profile": args.profile})
    rows = _found_rows(settings)
    random_profile = settings.profile != "default"
    fingerprints: dict[str, str] = {}
    error = None
    intact = _print_digests(settings)
    nothing_missing = random_profile or all(path is not None for _, path, _ in rows)
    if not args.no_load and nothing_missing and intact:  # building is the proof; pointless while files are missing
        from worker.inspection.models.registry import load_models

        try:
            bundle = load_models(settings)
            fingerprints = dict(bundle.fingerprints, profile=bundle.fingerprint)
            if settings.isnet_precision == "int8" and "isnet" in fingerprints:  # the graph that runs is the int8 one
                fingerprints["isnet-int8"] = fingerprints.pop("isnet")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    print(f"profile {settings.profile}" + (" (RANDOM weights: scores mean nothing)" if random_profile else ""))
    missing = False
    for model, path, fix in rows:
        if random_profile and not model.startswith("isnet"):
            state, where = "random", f"built in memory ({settings.profile} architecture)"
        elif path is None:
            state, where, missing = "MISSING", f"put it at {fix}", True
        else:
            state, where = "real", str(path)
        print(f"  {model:10} {state:8} {fingerprints.get(model, '-')[:16]:16}  {where}")
    if not intact:
        print(f"profile {settings.profile} cannot load: weight files differ from their pins or lock (above)")
        return 1
    if error is not None:
        print(f"profile {settings.profile} cannot load: {error}")
        return 1
    if missing:
        print(f"profile {settings.profile} cannot load: files missing (`linewatch-worker models pull`)")
        return 1
    print(f"profile {settings.profile} loads" + (f": fingerprint {fingerprints['profile']}" if fingerprints else ""))
    return 0


def _print_digests(settings: ModelSettings) -> bool:
    """Hash every needed file in the models folder against its pin or lock; False on any mismatch."""
    from worker.inspection.models.integrity import check_files

    try:
        checks = check_files(settings)
    except ValueError as exc:  # an unreadable lock
        print(f"digests: {exc}")
        return False
    if checks:
        print("digests:")
    for check in checks:
        state = "ok" if check.ok and check.expected else "unverified" if check.ok else "MISMATCH"
        print(f"  {check.source:10} {state:8} {check.path}: {check.describe()}")
    return all(check.ok for check in checks)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def _calibration_frames(args) -> list:
    import numpy as np
    from PIL import Image

    if args.synthetic is not None:
        from worker.bench.inprocess import synthetic_frames

        return [frame.image for frame in synthetic_frames(args.synthetic, 640, 480, seed=1)]
    if not args.images.is_dir():
        raise FileNotFoundError(f"--images {args.images}: not a folder")
    files = sorted(path for path in args.images.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not files:
        raise FileNotFoundError(f"--images {args.images}: no {'/'.join(sorted(IMAGE_SUFFIXES))} files")
    frames = []
    for path in files:
        try:
            frames.append(np.asarray(Image.open(path).convert("RGB")))
        except OSError as exc:  # an unreadable file: say which, quantise nothing
            raise ValueError(f"--images: cannot read {path}: {exc}") from exc
    return frames


def run_quantize_isnet(args, settings: ModelSettings) -> int:
    """Quantise, then show on the same frames what int8 changes: the >= 0.5 mask's IoU and the time."""
    import time

    import numpy as np

    from worker.inspection.models.isnet import default_isnet_path, load_isnet
    from worker.inspection.models.isnet_int8 import load_int8_isnet, mask_iou, quantize_isnet

    float_path = settings.isnet_path or default_isnet_path(settings.models_dir)
    try:
        frames = _calibration_frames(args)
        with progress_bar(total=len(frames), desc="calibrating", unit="frame", quiet=args.quiet) as bar:
            written = quantize_isnet(float_path, frames, progress=bar)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written} ({written.stat().st_size / 2**20:.0f} MiB), calibrated on {len(frames)} frames")
    masks, ms = {}, {}
    for name, model in (
        ("float", load_isnet(float_path, providers=["CPUExecutionProvider"])),
        ("int8", load_int8_isnet(float_path)),
    ):
        model.predict(frames[:1])  # the first pass sets up the session: not part of the time
        start = time.perf_counter()
        with progress_bar(frames, desc=f"comparing ({name})", unit="frame", quiet=args.quiet) as each:
            masks[name] = [model.predict([frame])[0] >= 0.5 for frame in each]
        ms[name] = 1000 * (time.perf_counter() - start) / len(frames)
    ious = [mask_iou(a, b) for a, b in zip(masks["int8"], masks["float"])]
    print(
        f"on those frames: IoU of the >= 0.5 mask against float min {min(ious):.3f} mean {np.mean(ious):.3f}; "
        f"ms per frame float {ms['float']:.0f}, int8 {ms['int8']:.0f}"
    )
    print("use it: LINEWATCH_MODELS__ISNET_PRECISION=int8")
    return 0
