"""Are the weight files a worker is about to load the ones that were pinned or locked?

Every file the settings need that lies where `models pull` (or `make models`, for IS-Net) puts
it is hashed and compared with its pin in pins.json, else with its entry in the folder's lock
(lock.py). A worker refuses to start on any mismatch; `models check` prints the same table.

Each file is hashed in full at every start, streamed in 1 MiB blocks (about 0.6-0.8 GB/s on
one of 2 virtual cores of an AMD EPYC: some 2.5 s for the 1.8 GB of CLIP, CLIPSeg and SAM ViT-B,
while building those models takes longer and reads the same bytes). A cache keyed on size and
modification time would be faster, but anyone who can rewrite a file can also restore its
mtime, and a pin would then no longer prove anything. Within one process a file whose size,
mtime and inode are unchanged is not hashed twice (tests and benchmarks load models often).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.settings import ModelSettings
from worker.inspection.models.catalog import PINS_FILE, ModelSource, load_catalog
from worker.inspection.models.download import file_sha256
from worker.inspection.models.lock import load_lock, lock_path, locked

Origin = Literal["pin", "lock", "none"]
_hashed: dict[tuple[str, int, int, int], str] = {}


class WeightsMismatch(RuntimeError):
    """A weight file differs from its pinned or locked sha256: the worker does not start."""


@dataclass(frozen=True)
class FileCheck:
    source: str
    path: Path
    expected: str | None
    actual: str
    origin: Origin  # where `expected` comes from

    @property
    def ok(self) -> bool:
        return self.expected is None or self.actual == self.expected

    def describe(self) -> str:
        if self.expected is None:
            return "unverified: no pin and no lock entry (fetch it with `linewatch-worker models pull`)"
        if self.ok:
            return f"sha256 matches the {'pin' if self.origin == 'pin' else 'lock (trusted on first pull)'}"
        return f"sha256 {self.actual}, expected {self.expected} ({self.origin})"


def sha256_once(path: Path) -> str:
    """The file's sha256, hashed once per process while its size, mtime and inode stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _hashed:
        _hashed[key] = file_sha256(path)
    return _hashed[key]


def needed_sources(settings: ModelSettings, catalog: dict[str, ModelSource]) -> list[ModelSource]:
    """The catalog entries whose files this worker loads from its models folder."""
    keys = ["clip", "clipseg"] if settings.profile == "default" else []
    if settings.profile == "default" and settings.foreground == "sam+isnet" and settings.sam_checkpoint is None:
        keys.append(f"sam_{settings.sam_type}")
    if settings.foreground != "none" and settings.isnet_path is None:
        keys.append("isnet")
    return [catalog[key] for key in keys if key in catalog]


def pins_file(settings: ModelSettings) -> Path:
    return settings.pins_file or PINS_FILE


def check_files(settings: ModelSettings) -> list[FileCheck]:
    """One FileCheck per needed file present in the models folder (a missing one is the loader's to report)."""
    catalog, lock = load_catalog(pins_file(settings)), load_lock(settings.models_dir)
    checks = []
    for source in needed_sources(settings, catalog):
        effective, from_lock = locked(source, lock)
        for name, expected in effective.files.items():
            path = Path(settings.models_dir) / source.dest / name
            if not path.is_file():
                continue
            origin: Origin = "none" if expected is None else "lock" if name in from_lock else "pin"
            checks.append(FileCheck(source.key, path, expected, sha256_once(path), origin))
    return checks


def require_intact(settings: ModelSettings) -> list[FileCheck]:
    """check_files, raising WeightsMismatch that names every file that differs."""
    checks = check_files(settings)
    bad = [check for check in checks if not check.ok]
    if bad:
        lines = "\n  - ".join(f"{check.path}: {check.describe()}" for check in bad)
        raise WeightsMismatch(
            f"weight files differ from their pinned or locked sha256, refusing to load them:\n  - {lines}\n"
            f"(pins: {pins_file(settings)}; lock: {lock_path(settings.models_dir)}. Delete the file and run "
            "`linewatch-worker models pull` to fetch it again; if the new file is intended, delete its entry "
            "from the lock too)"
        )
    return checks
