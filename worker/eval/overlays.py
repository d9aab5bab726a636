"""Worst false positives / false negatives per category, rendered as heatmap overlays.

`WorstCases` keeps, during the stream, the N highest-scoring normal images and
the N lowest-scoring anomalous images with a downscaled copy of their anomaly
map (at most `MAP_SIDE` pixels on the long side, float16), so its memory is
bounded by 2 N small maps. At the end the images and masks are re-read from
disk and `render_overlay` draws them.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worker.eval.datasets import Sample, UnreadableFileError, load_image, load_mask
from worker.inspection.overlays import overlay_heatmap

MAP_SIDE = 512
OVERLAY_MAX_SIDE = 1024
CONTOUR_RGB = (255, 0, 255)  # magenta: not on the JET scale


@dataclass(frozen=True)
class WorstCase:
    """A kept sample: its score and its anomaly map, (h, w) float16, downscaled."""

    sample: Sample
    score: float
    small_map: np.ndarray


def downscale_map(anomaly_map: np.ndarray, max_side: int = MAP_SIDE) -> np.ndarray:
    """(H, W) float map -> (h, w) float16 with max(h, w) <= max_side (area-averaged)."""
    height, width = anomaly_map.shape
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        anomaly_map = cv2.resize(anomaly_map.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return anomaly_map.astype(np.float16)


class WorstCases:
    """Bounded selection of the N worst false positives and N worst false negatives of one category."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._order = itertools.count()  # tie-breaker so heap entries never compare samples
        # Min-heaps holding the current keepers; the root is the first to be evicted.
        self._false_pos: list[tuple[float, int, WorstCase]] = []  # key = score (keep highest)
        self._false_neg: list[tuple[float, int, WorstCase]] = []  # key = -score (keep lowest)

    def offer(self, sample: Sample, score: float, anomaly_map: np.ndarray) -> None:
        """Consider one inspected sample; anomaly_map is (H, W) float at image resolution."""
        if self.count <= 0:
            return
        heap, key = (self._false_pos, score) if sample.label == 0 else (self._false_neg, -score)
        if len(heap) >= self.count and key <= heap[0][0]:
            return
        entry = (key, next(self._order), WorstCase(sample, float(score), downscale_map(anomaly_map)))
        if len(heap) < self.count:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def false_positives(self) -> list[WorstCase]:
        """Normal images, highest score first."""
        return [e[2] for e in sorted(self._false_pos, key=lambda e: (-e[0], e[1]))]

    def false_negatives(self) -> list[WorstCase]:
        """Anomalous images, lowest score first."""
        return [e[2] for e in sorted(self._false_neg, key=lambda e: (-e[0], e[1]))]


def render_overlay(image: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray, caption: str) -> np.ndarray:
    """`overlay_heatmap` of the image, downscaled, with the ground-truth contour and a caption.

    image: (H, W, 3) uint8 RGB; anomaly_map: (h, w) float in [0, 1], any size; mask: (H, W) bool.
    Returns (H', W', 3) uint8 BGR (for cv2.imwrite): a caption banner on top of the overlay,
    which is downscaled to at most OVERLAY_MAX_SIDE on the long side.
    """
    height, width = image.shape[:2]
    scale = min(1.0, OVERLAY_MAX_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    mask_small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    blended = overlay_heatmap(
        image, anomaly_map, mask_small, contour_rgb=CONTOUR_RGB, thickness=max(1, round(2 * size[0] / 512))
    )
    return _with_caption(cv2.cvtColor(blended, cv2.COLOR_RGB2BGR), caption)


def _with_caption(picture: np.ndarray, caption: str) -> np.ndarray:
    """Put a black banner with white `caption` text above the (H, W, 3) BGR picture."""
    width = picture.shape[1]
    scale = 0.4
    (text_width, text_height), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    if text_width > width - 8:
        scale *= (width - 8) / text_width
        (text_width, text_height), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    banner = np.zeros((text_height + baseline + 8, width, 3), dtype=np.uint8)
    cv2.putText(banner, caption, (4, text_height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([banner, picture], axis=0)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


def write_worst_cases(worst: WorstCases, out_dir: Path) -> list[Path]:
    """Render every kept case into out_dir/worst_fp_<rank>_<defect>_<stem>.png / worst_fn_...; returns the files.

    Cases whose image or mask can no longer be read are left out.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for prefix, cases in (("worst_fp", worst.false_positives()), ("worst_fn", worst.false_negatives())):
        for rank, case in enumerate(cases, start=1):
            try:
                image = load_image(case.sample.image_path)
                mask = load_mask(case.sample.mask_path, image.shape[:2])
            except UnreadableFileError:
                continue
            kind = "false positive" if prefix == "worst_fp" else "false negative"
            caption = f"{kind} #{rank}: {case.sample.defect_type} {case.sample.image_path.name} score {case.score:.3f}"
            picture = render_overlay(image, case.small_map.astype(np.float32), mask, caption)
            name = (
                f"{prefix}_{rank}_{_safe_name(case.sample.defect_type)}_{_safe_name(case.sample.image_path.stem)}.png"
            )
            path = out_dir / name
            if cv2.imwrite(str(path), picture):
                written.append(path)
    return written
