"""`make chaos`: run the fault scenarios against a private Kafka broker and Redis, print the table.

    python -m infra.chaos.report                                  # every scenario under both guarantees
    python -m infra.chaos.report --only broker-restart --only redis-killed --json chaos.json
    python -m infra.chaos.report --only kill9-mid-transaction --guarantee exactly-once

Each scenario runs under each `kafka.processing_guarantee` (`--guarantee`, repeatable; default both).
Duplicates are counted by a `read_committed` reader over `frame_id`s. The table is Markdown (it is
pasted into docs/deploy/operations.md). Exit status 1 when a scenario failed to run, lost a frame, or
published a duplicate under exactly-once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

from infra.chaos.crashes import CRASH_SCENARIOS
from infra.chaos.crashes import RECOVERY as CRASH_RECOVERY
from infra.chaos.harness import running_infra
from infra.chaos.scenarios import RECOVERY as SCENARIO_RECOVERY
from infra.chaos.scenarios import SCENARIOS as FAULT_SCENARIOS
from infra.chaos.scenarios import ChaosRow

SCENARIOS = FAULT_SCENARIOS | CRASH_SCENARIOS
RECOVERY = SCENARIO_RECOVERY | CRASH_RECOVERY
GUARANTEES = ("at-least-once", "exactly-once")

COLUMNS = (
    "scenario",
    "guarantee",
    "frames sent",
    "results",
    "lost",
    "duplicates",
    "dead-lettered",
    "recovery (s)",
    "peak RSS (MiB)",
    "observations",
)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def format_table(rows: list[ChaosRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        t = row.tally
        observations = ", ".join(f"{name}={value}" for name, value in row.observations.items())
        cells = (
            row.scenario,
            row.guarantee,
            t.sent,
            t.results,
            t.lost,
            t.duplicates,
            t.dead_lettered,
            row.recovery_s,
            row.peak_rss_mb,
            observations,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def format_recovery_notes(rows: list[ChaosRow]) -> str:
    scenarios = dict.fromkeys(row.scenario for row in rows)
    return "\n".join(f"- recovery of `{name}`: {RECOVERY[name]}" for name in scenarios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.chaos.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)")
    parser.add_argument(
        "--guarantee", action="append", choices=GUARANTEES, help="run only under this guarantee (repeatable)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    guarantees = args.guarantee or list(GUARANTEES)
    rows: list[ChaosRow] = []
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="linewatch-chaos-") as work_dir:
        with running_infra(Path(work_dir)) as infra:
            for name in names:
                for guarantee in guarantees:
                    label = f"{name} ({guarantee})"
                    print(f"chaos: {label} ...", file=sys.stderr, flush=True)
                    scenario_started = time.monotonic()
                    try:
                        row = SCENARIOS[name](replace(infra, guarantee=guarantee))
                        rows.append(replace(row, guarantee=guarantee))
                    except Exception:
                        traceback.print_exc()
                        failed.append(label)
                    took = time.monotonic() - scenario_started
                    print(f"chaos: {label} took {took:.0f} s", file=sys.stderr, flush=True)
    print(format_table(rows))
    print()
    print(format_recovery_notes(rows))
    print(
        f"\n{len(rows)} scenarios in {time.monotonic() - started:.0f} s"
        + (f"; FAILED to run: {', '.join(failed)}" if failed else "")
    )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    duplicated = any(row.tally.duplicates for row in rows if row.guarantee == "exactly-once")
    return 1 if failed or duplicated or any(row.tally.lost for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
