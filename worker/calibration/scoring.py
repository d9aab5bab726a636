"""Normal frames through the Inspector: each frame's raw image score and its normal pixel score."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.calibration import normal_pixel_score
from common.codecs import ImageDecodeError, decode_image, sniff_content_type
from common.settings import WorkerSettings
from worker.inspection.types import Frame, InspectorProtocol


@dataclass(frozen=True)
class NormalFrame:
    """A frame known to be good. `label` names it in messages (a file path, a frame id)."""

    label: str
    image: np.ndarray
    object_name: str


@dataclass
class NormalScores:
    """Per normal frame, in order: its raw image score and its highest map value inside the foreground."""

    labels: list[str] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    pixel: list[float] = field(default_factory=list)


def decode_file(path: Path, limits: WorkerSettings) -> tuple[np.ndarray, str]:
    """(RGB image, content type) of a JPEG or PNG file; OSError or ImageDecodeError otherwise."""
    data = path.read_bytes()
    content_type = sniff_content_type(data)
    if content_type is None:
        raise ImageDecodeError("format", "not a JPEG or PNG file")
    image = decode_image(data, content_type, max_bytes=limits.max_frame_bytes, max_pixels=limits.max_frame_pixels)
    return image, content_type


def score_normal_frames(
    inspector: InspectorProtocol, frames: Sequence[NormalFrame], *, batch: int = 4, progress: bool = True
) -> NormalScores:
    """Inspect `frames` in batches of `batch` (with a progress bar on stderr) and keep their scores."""
    from tqdm import tqdm

    scores = NormalScores()
    with tqdm(total=len(frames), disable=not progress, file=sys.stderr, unit="frame", desc="calibrating") as bar:
        for start in range(0, len(frames), max(1, batch)):
            chunk = frames[start : start + max(1, batch)]
            inspections = inspector.inspect(
                [Frame(f"normal-{start + i}", f.image, f.object_name) for i, f in enumerate(chunk)]
            )
            for frame, inspection in zip(chunk, inspections, strict=True):
                scores.labels.append(frame.label)
                scores.raw.append(float(np.clip(inspection.score, 0.0, 1.0)))
                scores.pixel.append(normal_pixel_score(inspection.anomaly_map, inspection.foreground))
            bar.update(len(chunk))
    return scores
