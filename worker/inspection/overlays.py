"""An anomaly map drawn over its frame: the one heatmap overlay (CLI `inspect --out`, eval's worst cases)."""

from __future__ import annotations

import cv2
import numpy as np

HEATMAP_ALPHA = 0.45
WHITE = (255, 255, 255)


def overlay_heatmap(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray | None = None,
    alpha: float = HEATMAP_ALPHA,
    *,
    contour_rgb: tuple[int, int, int] = WHITE,
    thickness: int = 2,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB image blended with a JET-coloured anomaly map; `mask` outlined.

    anomaly_map: float in [0, 1], any size (resized bilinearly to H, W); the colour scale is
    absolute (0 = blue, 1 = red), not normalised per image. mask: (H, W) bool or None.
    Returns (H, W, 3) uint8 RGB.
    """
    height, width = image.shape[:2]
    heat = np.asarray(anomaly_map, dtype=np.float32)
    if heat.shape != (height, width):
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap((np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(image, 1 - alpha, cv2.cvtColor(colours, cv2.COLOR_BGR2RGB), alpha, 0)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(blended, contours, -1, contour_rgb, thickness)
    return blended
