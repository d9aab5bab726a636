"""An anomaly map drawn over its frame: the one heatmap overlay (dashboard, CLI `inspect --out`, eval's worst cases).

Heat is drawn only where the map passes a level (by default half the pixel threshold), more opaque
the higher the score; below it the frame keeps its own pixels, so an operator sees the part's real
colours on a good frame instead of a blue wash. The defect mask is outlined.
"""

from __future__ import annotations

import cv2
import numpy as np

HEAT_FROM = 0.5  # heat shows from this fraction of the pixel threshold: near-misses are seen, the rest is not
DEFAULT_PIXEL_THRESHOLD = 0.5
ALPHA_AT_LEVEL = 0.25  # just past the level: visible, the frame still readable through it
ALPHA_AT_ONE = 0.65
WHITE = (255, 255, 255)


def heat_level(pixel_threshold: float = DEFAULT_PIXEL_THRESHOLD, fraction: float = HEAT_FROM) -> float:
    """The map value from which heat is drawn."""
    return float(np.clip(pixel_threshold * fraction, 0.0, 1.0))


def heat_alpha(heat: np.ndarray, level: float) -> np.ndarray:
    """Per-pixel opacity of the heat colour: 0 at or below `level`, then rising linearly with the score
    from ALPHA_AT_LEVEL just above it to ALPHA_AT_ONE at 1."""
    ramp = np.clip((heat - level) / max(1.0 - level, 1e-6), 0.0, 1.0)
    return np.where(heat > level, ALPHA_AT_LEVEL + (ALPHA_AT_ONE - ALPHA_AT_LEVEL) * ramp, 0.0).astype(np.float32)


def overlay_heatmap(
    image: np.ndarray,
    anomaly_map: np.ndarray | None,
    mask: np.ndarray | None = None,
    *,
    level: float | None = None,
    contour_rgb: tuple[int, int, int] = WHITE,
    thickness: int = 2,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame with JET heat where `anomaly_map` passes `level`, and `mask` outlined.

    anomaly_map: float in [0, 1], any size (resized bilinearly to H, W), or None for the outline only;
    the colour scale is absolute (0 = blue, 1 = red), not normalised per image. level: default
    heat_level() (half the default pixel threshold). mask: (H, W) bool or None.
    Returns a new (H, W, 3) uint8 RGB array; pixels at or below the level equal the frame's.
    """
    height, width = image.shape[:2]
    drawn = image.copy()
    if anomaly_map is not None:
        heat = np.asarray(anomaly_map, dtype=np.float32)
        if heat.shape != (height, width):
            heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
        alpha = heat_alpha(heat, heat_level() if level is None else level)
        hot = alpha > 0
        if hot.any():
            colours = cv2.applyColorMap((np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_JET)
            colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
            weight = alpha[hot][:, None]
            mixed = image[hot].astype(np.float32) * (1 - weight) + colours[hot].astype(np.float32) * weight
            drawn[hot] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(drawn, contours, -1, contour_rgb, thickness)
    return drawn
