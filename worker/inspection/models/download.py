"""Downloads for `models pull`: hub files through huggingface_hub, SAM over plain HTTP.

Both end the same way: the sha256 of the finished file is compared with the pin; a mismatch
deletes the file and names both digests. An interrupted transfer resumes from what is on disk
(huggingface_hub keeps its own `.incomplete` file; the HTTP path keeps `<name>.part` and asks
for the rest with a Range header) and only a checked file gets its published name.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from common.progress import progress_bar
from worker.inspection.models.catalog import ModelSource
from worker.inspection.models.offline import downloads_allowed

CHUNK = 1 << 20
HTTP_ATTEMPTS = 4  # one try plus resumes after a dropped connection


class DigestMismatch(RuntimeError):
    """A downloaded file is not the pinned one; it has been deleted."""


class UnpinnedFile(RuntimeError):
    """A file has no pinned or locked sha256 and --require-pins was given."""


@dataclass(frozen=True)
class Fetched:
    source: str
    path: Path
    sha256: str
    size: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def md5_prefix_in_name(name: str) -> str | None:
    """Meta names SAM files after their md5 (sam_vit_b_01ec64.pth -> '01ec64')."""
    tail = Path(name).stem.rsplit("_", 1)[-1]
    return tail if len(tail) == 6 and all(c in "0123456789abcdef" for c in tail) else None


def verify(path: Path, expected: str | None, label: str) -> str:
    """The file's sha256; deletes the file and raises when it differs from `expected`."""
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        path.unlink(missing_ok=True)
        raise DigestMismatch(f"{label}: sha256 {actual} but the pin is {expected}; the file was deleted")
    return actual


def _require_pin(source: ModelSource, name: str, require_pins: bool) -> None:
    if source.files[name] is None and require_pins:
        raise UnpinnedFile(
            f"{source.key}: {name} has no pinned sha256 in worker/inspection/models/pins.json and no entry in "
            "the models folder's lock.json (--require-pins); run `linewatch-worker models pull --update-pins` "
            "once where you trust the network, check the recorded digests and commit them"
        )


def resolve_revision(source: ModelSource) -> str:
    """The pinned or locked commit, or the commit `main` points to now (first pull of an unpinned source)."""
    if source.revision is not None:
        return source.revision
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    first = next(iter(source.files))
    with downloads_allowed():
        metadata = get_hf_file_metadata(hf_hub_url(source.repo, first, revision="main"))
    return metadata.commit_hash or "main"


def fetch_hub(source: ModelSource, models_dir: Path, require_pins: bool = False) -> tuple[str, list[Fetched]]:
    """All files of a hub source at one commit into <models_dir>/<dest>/ under their published names."""
    from huggingface_hub import hf_hub_download

    for name in source.files:
        _require_pin(source, name, require_pins)
    revision = resolve_revision(source)
    folder = models_dir / source.dest
    fetched = []
    for name, expected in source.files.items():
        with downloads_allowed():
            path = Path(hf_hub_download(source.repo, name, revision=revision, local_dir=folder))
        digest = verify(path, expected, f"{source.repo}@{revision}/{name}")
        fetched.append(Fetched(source.key, path, digest, path.stat().st_size))
    return revision, fetched


def _http_resume(url: str, part: Path, label: str, quiet: bool = False) -> None:
    """Fill `part` with the body at `url`, continuing from its current size (Range request)."""
    for attempt in range(HTTP_ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=(10, 60)) as response:
                if response.status_code == 416:  # nothing left to send: the part is whole
                    return
                response.raise_for_status()
                resumed = response.status_code == 206
                total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
                with (
                    part.open("ab" if resumed else "wb") as out,
                    progress_bar(
                        total=total or None,
                        initial=have if resumed else 0,
                        unit="B",
                        unit_scale=True,
                        desc=label,
                        quiet=quiet,
                    ) as bar,
                ):
                    for block in response.iter_content(CHUNK):
                        out.write(block)
                        bar.update(len(block))
                if total and part.stat().st_size < total:
                    raise requests.ConnectionError(
                        f"{label}: connection closed at {part.stat().st_size} of {total} bytes"
                    )
                return
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            if attempt == HTTP_ATTEMPTS - 1:
                raise
            print(
                f"{label}: transfer interrupted at {part.stat().st_size if part.exists() else 0} bytes; resuming",
                file=sys.stderr,
            )


def fetch_url(
    source: ModelSource, base_url: str, models_dir: Path, require_pins: bool = False, quiet: bool = False
) -> list[Fetched]:
    """Plain-HTTP files (SAM): `<name>.part`, resumed; checked; renamed to the published name."""
    folder = models_dir / source.dest
    folder.mkdir(parents=True, exist_ok=True)
    fetched = []
    for name, expected in source.files.items():
        _require_pin(source, name, require_pins)
        final = folder / name
        if final.is_file():
            digest = verify(final, expected, str(final))  # a file already there must be the pinned one
            fetched.append(Fetched(source.key, final, digest, final.stat().st_size))
            continue
        part = folder / f"{name}.part"
        _http_resume(base_url.rstrip("/") + "/" + name, part, name, quiet)
        digest = verify(part, expected, name)
        prefix = md5_prefix_in_name(name)
        if expected is None and prefix is not None:  # no sha256 pin yet: the name's md5 prefix still guards
            md5 = _file_md5(part)
            if not md5.startswith(prefix):
                part.unlink()
                raise DigestMismatch(f"{name}: md5 {md5} does not start with {prefix}; the file was deleted")
        part.replace(final)  # atomic on one file system: the published name only ever holds a checked file
        fetched.append(Fetched(source.key, final, digest, final.stat().st_size))
    return fetched


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
