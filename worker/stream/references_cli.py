"""`linewatch-worker references add|list|show|delete`: the reference banks of good frames.

`add` inspects the good frames (files, and with `--from-feedback` the frames operators marked
`good_reference` on the feedback topic) with the configured models, adds their tiles' patch
features to the scope's bank in force (`--replace`: a new bank), caps it by greedy coreset,
stores it in Redis under (model fingerprint, scope, version) and announces it on the control
topic: the scope's record in force with `references` set and the next version. Every worker
loads it from Redis as soon as it reads the record. `delete` announces the scope without a bank
and removes the scope's banks from Redis. Bad arguments exit with code 2, broker or Redis
trouble with 1.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

from common.audit import publish_change
from common.control import ControlRecord, ReferenceSet, parse_scope, scope_key
from common.control_topic import read_control_topic
from common.progress import add_quiet_flag, progress_bar
from common.schemas import utc_now
from common.settings import PROFILE_NAMES, LinewatchSettings


def add_references_parser(subparsers) -> None:
    parser = subparsers.add_parser("references", help="reference banks of good frames (few-shot), shared by workers")
    commands = parser.add_subparsers(dest="references_command", required=True)
    add = commands.add_parser("add", help="add good frames to the scope's bank and announce the new version")
    add.add_argument("images", nargs="*", type=Path, help="good frames (JPEG/PNG)")
    add.add_argument("--object", required=True, help="the product as named in prompts")
    add.add_argument("--camera", default=None, help="a camera id: the bank is for that camera's frames only")
    add.add_argument("--from-feedback", action="store_true", help="also the frames marked good_reference")
    add.add_argument("--replace", action="store_true", help="a new bank instead of adding to the one in force")
    add.add_argument("--profile", choices=PROFILE_NAMES, default=None)
    add.add_argument("--foreground", choices=["sam+isnet", "isnet", "none"], default=None)
    add.add_argument("--by", default=None, help="who adds them (default: the login name)")
    add_quiet_flag(add)
    commands.add_parser("list", help="every scope with a bank in force, one JSON line each")
    for name, text in (("show", "the bank in force for one scope"), ("delete", "announce the scope without a bank")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--scope", required=True, help="object:<name>, camera:<id> or camera:<id>/object:<name>")


def run_references(args, settings: LinewatchSettings) -> int:
    from worker.inspection.fewshot.store import open_store
    from worker.inspection.value_signing import UnsignedRedisRefused

    try:
        store = open_store(settings.redis)
    except UnsignedRedisRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if store is None:
        print("error: reference banks live in Redis: set LINEWATCH_REDIS__URL", file=sys.stderr)
        return 2
    try:
        if args.references_command == "add":
            return _add(args, settings, store)
        table, _ = read_control_topic(settings.kafka)
        if args.references_command == "list":
            for scope, record in sorted(table.records.items()):
                if record.references is not None:
                    print(json.dumps(_describe(scope, record, store)))
            return 0
        parse_scope(args.scope)
        record = table.records.get(args.scope)
        if args.references_command == "show":
            if record is None or record.references is None:
                print(f"error: {args.scope} has no reference bank in force", file=sys.stderr)
                return 1
            print(json.dumps(_describe(args.scope, record, store), indent=2))
            return 0
        return _delete(args, settings, store, table, record)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # broker or Redis unreachable
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _describe(scope: str, record: ControlRecord, store) -> dict:
    refs = record.references
    stored = [b for b in store.list_banks(scope) if b.version == refs.version]
    return {
        "scope": scope,
        "record_version": record.version,
        "bank_version": refs.version,
        "frames": refs.frames,
        "patches": refs.patches,
        "model_fingerprint": refs.model_fingerprint,
        "in_redis": bool(stored),
        "megabytes": round(stored[0].nbytes / 1e6, 2) if stored else None,
    }


def _announce(settings: LinewatchSettings, table, scope: str, current, references, by: str) -> ControlRecord:
    base = current.model_dump() if current is not None else {}
    base.update(version=table.next_version(scope), references=references, updated_at=utc_now(), updated_by=by)
    record = ControlRecord.model_validate(base)
    if references is None:
        reason = "reference bank removed"
    else:
        reason = f"reference bank v{references.version}: {references.frames} frames, {references.patches} patches"
    publish_change(settings.kafka, scope, current, record, "references", by=by, reason=reason)
    return record


def _add(args, settings: LinewatchSettings, store) -> int:
    from worker.calibration.sources import from_feedback, from_files
    from worker.inspection.fewshot.build import bank_from_images
    from worker.inspection.inspector import build_inspector

    scope = scope_key(args.camera, args.object)
    gathered = from_files(args.images, args.object, settings)
    if args.from_feedback:
        gathered.extend(from_feedback(args.camera, args.object, settings, label="good_reference"))
    for problem in gathered.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not gathered.frames:
        print("error: no good frame to add (give image files or --from-feedback)", file=sys.stderr)
        return 2
    updates = {k: v for k, v in (("profile", args.profile), ("foreground", args.foreground)) if v}
    inspector = build_inspector(settings.models.model_copy(update=updates))
    fingerprint = inspector.versions.model_fingerprint
    table, _ = read_control_topic(settings.kafka)
    current = table.records.get(scope)
    base = None
    if not args.replace and current is not None and current.references is not None:
        base = store.get_bank(fingerprint, scope, current.references.version)
    with progress_bar(total=len(gathered.frames), desc="references", unit="frame", quiet=args.quiet) as bar:
        bank = bank_from_images(inspector, [f.image for f in gathered.frames], args.object, base, progress=bar)
    version = str(table.next_version(scope))
    store.put_bank(fingerprint, scope, version, bank)  # in Redis before any worker hears of it
    references = ReferenceSet(version=version, frames=bank.frames, patches=bank.patches, model_fingerprint=fingerprint)
    record = _announce(settings, table, scope, current, references, args.by or getpass.getuser())
    print(json.dumps(_describe(scope, record, store)))
    return 0


def _delete(args, settings: LinewatchSettings, store, table, record) -> int:
    if record is None or record.references is None:
        print(f"error: {args.scope} has no reference bank in force", file=sys.stderr)
        return 1
    _announce(settings, table, args.scope, record, None, getpass.getuser())
    removed = sum(store.delete_bank(b.fingerprint, b.scope, b.version) for b in store.list_banks(args.scope))
    print(json.dumps({"scope": args.scope, "deleted_banks": removed}))
    return 0
