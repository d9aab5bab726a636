"""Pictures for the pages: the frame with its heatmap and defect outline, and the placeholders."""

from __future__ import annotations

import base64
import io
from html import escape

import cv2
import numpy as np
from PIL import Image

from common.codecs import decode_image, encode_image, image_size, rle_to_mask
from common.schemas import InspectionResult
from worker.inspection.overlays import overlay_heatmap

# Overlays are drawn at most this many pixels a side: the detail view's size, whatever the camera's.
OVERLAY_MAX_SIDE = 1280
# Workers send heatmaps of `worker.heatmap_side` (128) a side; a larger one is not drawn.
HEATMAP_MAX_SIDE = 1024


def heatmap_array(result: InspectionResult) -> np.ndarray | None:
    """The result's grey heatmap PNG as floats in [0, 1], or None when it has none. A heatmap of more than
    HEATMAP_MAX_SIDE squared pixels by its header is refused (ImageDecodeError) before it is decoded."""
    if result.heatmap is None:
        return None
    data = base64.b64decode(result.heatmap.png_base64)
    image_size(data, "image/png", max_bytes=len(data), max_pixels=HEATMAP_MAX_SIDE**2)
    grey = Image.open(io.BytesIO(data)).convert("L")
    return np.asarray(grey, dtype=np.float32) / 255.0


def render_overlay(
    frame: bytes,
    result: InspectionResult,
    *,
    level: float | None = None,
    max_bytes: int = 20_000_000,
    max_pixels: int = 40_000_000,
    max_side: int = OVERLAY_MAX_SIDE,
) -> bytes:
    """JPEG of the frame with heat where the map passes `level` (overlays.heat_level) and the defect
    mask outlined; elsewhere the frame's own colours. Drawn at most `max_side` pixels a side.

    The frame's size in bytes and its pixels by header are checked against the frame limits before
    anything is decoded (ImageDecodeError); the frame is scaled down as it is decoded."""
    width, height = image_size(frame, max_bytes=max_bytes, max_pixels=max_pixels)
    image = decode_image(frame, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side)
    mask = rle_to_mask(result.mask) if result.mask is not None else None
    if mask is not None and mask.shape != (height, width):
        mask = None  # a mask of another resolution would be drawn in the wrong place
    elif mask is not None and mask.shape != image.shape[:2]:
        small = (image.shape[1], image.shape[0])
        mask = cv2.resize(mask.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST).astype(bool)
    drawn = overlay_heatmap(image, heatmap_array(result), mask, level=level)
    return encode_image(drawn, "image/jpeg", quality=80)


def placeholder_svg(title: str, detail: str = "", width: int = 640, height: int = 480) -> bytes:
    """A grey picture that says why there is no frame (expired from the topic, not found ...)."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect width="100%" height="100%" fill="#3a3f44"/>'
        f'<text x="50%" y="46%" fill="#e8e8e8" font-family="sans-serif" font-size="28" text-anchor="middle">'
        f"{escape(title)}</text>"
        f'<text x="50%" y="56%" fill="#b8b8b8" font-family="sans-serif" font-size="16" text-anchor="middle">'
        f"{escape(detail)}</text></svg>"
    ).encode()
