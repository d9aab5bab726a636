"""`make chaos`: run the fault scenarios against a private Kafka broker and Redis, print the table.

    python -m infra.chaos.report                                  # all six scenarios
    python -m infra.chaos.report --only broker-restart --only redis-killed --json chaos.json

The table is Markdown (it is pasted into docs/deploy/operations.md). Exit status 1 when a scenario failed
to run or lost a frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from infra.chaos.harness import running_infra
from infra.chaos.scenarios import RECOVERY, SCENARIOS, ChaosRow

COLUMNS = (
    "scenario",
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
    return "\n".join(f"- recovery of `{row.scenario}`: {RECOVERY[row.scenario]}" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.chaos.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    rows: list[ChaosRow] = []
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="linewatch-chaos-") as work_dir:
        with running_infra(Path(work_dir)) as infra:
            for name in names:
                print(f"chaos: {name} ...", file=sys.stderr, flush=True)
                scenario_started = time.monotonic()
                try:
                    rows.append(SCENARIOS[name](infra))
                except Exception:
                    traceback.print_exc()
                    failed.append(name)
                print(f"chaos: {name} took {time.monotonic() - scenario_started:.0f} s", file=sys.stderr, flush=True)
    print(format_table(rows))
    print()
    print(format_recovery_notes(rows))
    print(
        f"\n{len(rows)} scenarios in {time.monotonic() - started:.0f} s"
        + (f"; FAILED to run: {', '.join(failed)}" if failed else "")
    )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    return 1 if failed or any(row.tally.lost for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
