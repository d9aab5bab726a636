"""Image folder source: every JPEG/PNG under a folder, in natural order, sent as the original bytes."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from common.codecs import IMAGE_SUFFIXES, ImageDecodeError, decode_image, sniff_content_type
from producer.sources.base import Frame, FrameSource, SourceError

log = logging.getLogger("producer.sources")


def _natural_key(path: str) -> tuple[object, ...]:
    """'a/img2.png' < 'a/img10.png': digit runs compare as numbers, the rest case-insensitively
    (the exact path breaks ties, so the order is total and stable)."""
    parts = [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", path)]
    return (parts, path)


def list_images(folder: str | Path) -> list[Path]:
    """JPEG/PNG files under `folder` (recursive), in natural order of their relative paths."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"image folder {str(root)!r} does not exist or is not a directory")
    files = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


class FolderSource(FrameSource):
    """Every JPEG/PNG under a folder, sorted; the original bytes travel unchanged when possible.

    Files that cannot be decoded are skipped with a warning (a stray file must not stop a line).
    """

    def __init__(self, folder: str | Path, *, loop: bool = False, max_pixels: int = 40_000_000):
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        if not self.files:
            raise SourceError(f"image folder {str(self.folder)!r} holds no .jpg/.jpeg/.png files")
        self.loop = loop
        self.max_pixels = max_pixels
        self.name = f"folder:{self.folder}"

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            yielded = False
            for path in self.files:
                try:
                    data = path.read_bytes()
                    rgb = decode_image(data, max_bytes=len(data) + 1, max_pixels=self.max_pixels)
                except (OSError, ImageDecodeError) as exc:
                    log.warning("skipping %s: %s", path, exc)
                    continue
                yield Frame(
                    rgb=rgb,
                    index=index,
                    name=path.relative_to(self.folder).as_posix(),
                    data=data,
                    content_type=sniff_content_type(data),  # decode_image accepted it: JPEG or PNG
                )
                index += 1
                yielded = True
            if not self.loop or not yielded:
                return
