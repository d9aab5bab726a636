"""Trust on first use for weights whose digest is not pinned: the lock file of a models folder.

pins.json (in the repository, reviewed) says which revision each published file comes from and
what it must hash to. Where a pin is null, the first `models pull` records the revision and the
sha256 it fetched in `<models_dir>/lock.json`. From then on that folder is held to it: later pulls
fetch the locked revision and compare against the locked digest, and every worker compares the
files it loads before building a model. A pin always wins over the lock.

The lock lives with the files it describes (a models folder shipped to other machines carries
it). It guards against a file that changes after the first pull (a corrupt copy, a half-finished
sync, a swapped checkpoint), not against the first download itself or against whoever can write
the folder: for that, record the digests in pins.json (`models pull --update-pins`) and commit them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from worker.inspection.models.catalog import ModelSource

LOCK_NAME = "lock.json"
LOCK_COMMENT = (
    "Written by `linewatch-worker models pull`: the revision and sha256 of each file fetched while its "
    "pin in pins.json was null (trust on first use). Workers refuse files that no longer match."
)


def lock_path(models_dir: Path) -> Path:
    return Path(models_dir) / LOCK_NAME


def load_lock(models_dir: Path) -> dict[str, dict]:
    """{source key: {"revision": str | None, "files": {name: sha256}}}; empty when there is no lock yet."""
    path = lock_path(models_dir)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it and run `linewatch-worker models pull`") from exc
    return {key: entry for key, entry in raw.items() if not key.startswith("_")}


def record(models_dir: Path, key: str, revision: str | None, digests: dict[str, str]) -> Path:
    """Add what one source's pull fetched to the lock (other sources' entries stay)."""
    path = lock_path(models_dir)
    raw = {"_comment": LOCK_COMMENT, **load_lock(models_dir)}
    entry = raw.get(key, {"revision": None, "files": {}})
    raw[key] = {"revision": revision or entry.get("revision"), "files": {**entry.get("files", {}), **digests}}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)  # a reader never sees half a lock
    return path


def locked(source: ModelSource, lock: dict[str, dict]) -> tuple[ModelSource, set[str]]:
    """`source` with the lock's revision and digests filling its null pins, and the names they filled."""
    entry = lock.get(source.key)
    if not entry:
        return source, set()
    filled = {
        name: digest
        for name, digest in entry.get("files", {}).items()
        if name in source.files and source.files[name] is None
    }
    revision = source.revision if source.revision is not None else entry.get("revision")
    return replace(source, revision=revision, files={**source.files, **filled}), set(filled)
