"""`linewatch-worker control get|set|list|delete|history|rollback`: operators' view of the control topic.

`get` and `list` read the compacted topic to its end with the workers' own rules (a record
counts only when its version is higher than the one before it), so they show what the workers
have in force. `set` starts from the record in force (or `--from-file`), applies the options,
and publishes it with the next version; `delete` writes a tombstone (the scope falls back to a
less specific one, or to the static threshold). Each change is appended to the audit topic
(common/audit.py) with its `--reason`; `history SCOPE` prints the scope's audit trail in the
broker's order and `rollback SCOPE --to N` publishes version N again, as the next version: only a
version that was in force on the control topics, never one the audit trail alone names. Bad scopes
and values exit with code 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from common.audit import publish_change, read_audit_entries
from common.calibration import TooFewFrames, frames_needed
from common.control import ControlRecord, parse_scope
from common.control_topic import ControlTable, encode_control, read_control_topic
from common.schemas import utc_now
from common.settings import LinewatchSettings

LEARNING_CLEARS = {"image_threshold": None, "pixel_threshold": None, "calibration": None}


class UsageError(ValueError):
    """A bad scope or value: exit code 2."""


def add_control_parser(subparsers) -> None:
    parser = subparsers.add_parser("control", help="read and change the control topic (thresholds, prompts, learning)")
    commands = parser.add_subparsers(dest="control_command", required=True)
    commands.add_parser("list", help="every scope with a record in force, one JSON line each")
    get = commands.add_parser("get", help="the record in force for one scope")
    get.add_argument("--scope", required=True, help="object:<name>, camera:<id> or camera:<id>/object:<name>")
    delete = commands.add_parser("delete", help="write a tombstone: the scope has no record any more")
    delete.add_argument("--scope", required=True)
    delete.add_argument("--by", default=None, help="who makes the change (default: the login name)")
    history = commands.add_parser("history", help="every change of a scope, from the audit topic, oldest first")
    history.add_argument("scope", help="object:<name>, camera:<id> or camera:<id>/object:<name>")
    history.add_argument("--json", action="store_true", help="whole audit records, one JSON line each")
    rollback = commands.add_parser("rollback", help="publish an earlier version of the scope's record again")
    rollback.add_argument("scope", help="object:<name>, camera:<id> or camera:<id>/object:<name>")
    rollback.add_argument("--to", type=int, required=True, metavar="N", help="the version to restore (see history)")
    rollback.add_argument("--by", default=None, help="who makes the change (default: the login name)")
    put = commands.add_parser("set", help="publish the scope's record with the next version")
    put.add_argument("--scope", required=True, help="object:<name>, camera:<id> or camera:<id>/object:<name>")
    put.add_argument("--image-threshold", type=float, help="raw image score at or above which a frame is anomalous")
    put.add_argument("--pixel-threshold", type=float, help="anomaly-map level of the defect mask")
    put.add_argument("--object-name", help="the product as named in prompts for this scope")
    put.add_argument("--extra-normal", nargs="+", default=None, metavar="STATE", help="extra normal states ({} = name)")
    put.add_argument("--extra-anomalous", nargs="+", default=None, metavar="STATE", help="extra anomalous states")
    put.add_argument("--learning-frames", type=int, help="learning mode: frames to calibrate from (needs --target-fpr)")
    put.add_argument("--target-fpr", type=float, help="learning mode: false-alarm rate the threshold bounds")
    put.add_argument("--from-file", type=Path, help="a ControlRecord JSON file to start from (its version is ignored)")
    put.add_argument("--by", default=None, help="who makes the change (default: the login name)")
    for command in (delete, put, rollback):
        command.add_argument("--reason", default=None, help="why: kept in the audit trail")
    for command in (get, delete, put, history, rollback):
        command.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker")
    commands.choices["list"].add_argument("--timeout", type=float, default=30.0)


def checked_scope(scope: str) -> str:
    try:
        parse_scope(scope)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return scope


def _base(args, current: ControlRecord | None) -> dict[str, Any]:
    if args.from_file is None:
        return current.model_dump() if current is not None else {}
    try:
        data = json.loads(args.from_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--from-file {args.from_file}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"--from-file {args.from_file}: expected a JSON object (a ControlRecord)")
    return data


def new_record(args, table: ControlTable) -> ControlRecord:
    """The record `set` publishes: the base, the options applied, the next version (pure)."""
    current = table.records.get(args.scope)
    fields = _base(args, current)
    if (args.learning_frames is None) != (args.target_fpr is None):
        raise UsageError("learning mode needs both --learning-frames and --target-fpr")
    if args.learning_frames is not None:
        fields |= LEARNING_CLEARS | {"learning": {"frames": args.learning_frames, "target_fpr": args.target_fpr}}
    for option, name in (("image_threshold", "image_threshold"), ("pixel_threshold", "pixel_threshold")):
        if getattr(args, option) is not None:
            fields[name] = getattr(args, option)
    if args.image_threshold is not None:
        fields["learning"] = None  # a threshold set by hand ends learning
    prompts = dict(fields.get("prompts") or {})
    for option, name in (
        ("object_name", "object_name"),
        ("extra_normal", "extra_normal_states"),
        ("extra_anomalous", "extra_anomalous_states"),
    ):
        if getattr(args, option) is not None:
            prompts[name] = getattr(args, option)
    fields["prompts"] = prompts or None
    fields |= {"version": table.next_version(args.scope), "updated_at": utc_now(), "updated_by": _who(args)}
    try:
        record = ControlRecord.model_validate(fields)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"not a valid control record: {errors}") from exc
    if record.learning is not None and record.image_threshold is None:
        needed = frames_needed(record.learning.target_fpr)
        if record.learning.frames < needed:
            raise UsageError(str(TooFewFrames(record.learning.frames, needed, record.learning.target_fpr)))
    return record


def _line(scope: str, record: ControlRecord) -> str:
    return json.dumps({"scope": scope, "record": json.loads(encode_control(record))}, sort_keys=True)


def run_control(args, settings: LinewatchSettings) -> int:
    try:
        return _run(args, settings)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # broker unreachable, timeout
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run(args, settings: LinewatchSettings) -> int:
    ks, command = settings.kafka, args.control_command
    if command != "list":
        checked_scope(args.scope)
    if command == "history":
        return _history(args, settings)
    if command == "rollback":
        return _rollback(args, settings)
    table, refused = read_control_topic(ks, args.timeout)
    for exc in refused:
        print(f"warning: refused on the topic ({exc.reason}): {exc.message}", file=sys.stderr)
    if command == "delete":
        before = table.records.get(args.scope)
        audit = publish_change(ks, args.scope, before, None, "delete", by=_who(args), reason=args.reason)
        print(json.dumps({"scope": args.scope, "deleted": True, "partition": audit.partition, "offset": audit.offset}))
        return 0
    if command == "list":
        for scope in sorted(table.records):
            print(_line(scope, table.records[scope]))
        return 0
    if command == "get":
        if args.scope not in table.records:
            print(f"no record in force for {args.scope}", file=sys.stderr)
            return 1
        print(_line(args.scope, table.records[args.scope]))
        return 0
    record = new_record(args, table)
    before = table.records.get(args.scope)
    publish_change(
        ks, args.scope, before, record, "set", by=record.updated_by, reason=args.reason, timeout_s=args.timeout
    )
    print(_line(args.scope, record))
    return 0


def _who(args) -> str:
    return args.by or getpass.getuser()


def restored_record(table: ControlTable, version: int, scope: str, by: str) -> ControlRecord:
    """Version `version` of the scope's record, as the scope's next version (pure).

    Only a record that was in force on the control topics (read with `history=True`) is restored: those
    topics only the operator (control) and the table's rules (learned records) let in. The audit trail is not
    a source: anyone allowed to append to it could have written a record for any version."""
    kept = (table.history or {}).get(scope, {})
    found = kept.get(version)
    if found is None:
        raise UsageError(
            f"{scope} has no version {version} in the control topic's retained log (versions there: "
            f"{sorted(kept) or 'none'}); to restore an older one, review it in `control history --json` "
            "and publish it with `control set --from-file`"
        )
    return found.model_copy(update={"version": table.next_version(scope), "updated_at": utc_now(), "updated_by": by})


def _rollback(args, settings: LinewatchSettings) -> int:
    table, _ = read_control_topic(settings.kafka, args.timeout, history=True)
    record = restored_record(table, args.to, args.scope, _who(args))
    reason = args.reason or f"rollback to v{args.to}"
    before = table.records.get(args.scope)
    publish_change(settings.kafka, args.scope, before, record, "rollback", by=record.updated_by, reason=reason)
    print(_line(args.scope, record))
    return 0


def _history(args, settings: LinewatchSettings) -> int:
    entries, invalid = read_audit_entries(settings.kafka, args.scope, args.timeout)
    history = [entry.record for entry in entries]
    for problem in invalid:
        print(f"warning: unreadable audit record at {problem}", file=sys.stderr)
    for entry in entries:  # in the broker's order, with the broker's time
        audit = entry.record
        if args.json:
            print(audit.model_dump_json(exclude_none=True))
            continue
        version = f"v{audit.version}" if audit.version is not None else "deleted"
        who = audit.by + (f" as {audit.principal}" if audit.principal else "")
        what = ", ".join(audit.changed) or "-"
        reason = f"  ({audit.reason})" if audit.reason else ""
        logged = entry.logged_at.isoformat(timespec="seconds")
        print(f"{logged}  {version:>8}  {audit.action:<10}  {who}  {what}{reason}")
    table, _ = read_control_topic(settings.kafka, args.timeout)
    in_force = table.records.get(args.scope)
    if in_force is not None and not any(a.version == in_force.version for a in history):
        print(
            f"warning: v{in_force.version} in force has no audit record (written without linewatch's commands)",
            file=sys.stderr,
        )
    if not history:
        print(f"no audit record for {args.scope}", file=sys.stderr)
        return 1
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The `control` arguments alone (for tests)."""
    parser = argparse.ArgumentParser(prog="linewatch-worker")
    add_control_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["control", *argv])
