"""GenICam pixel formats -> (H, W, 3) uint8 RGB (pure numpy/OpenCV, no camera needed).

OpenCV names a Bayer pattern by the 2x2 block one pixel down and right of the origin, GenICam
(SFNC) by the block at the origin: GenICam `BayerRG8` (red at (0, 0)) is OpenCV's `BayerBG`.
"""

from __future__ import annotations

import cv2
import numpy as np

# GenICam PixelFormat name -> OpenCV conversion to RGB (None: no conversion needed)
_BAYER_TO_RGB = {
    "BayerRG8": cv2.COLOR_BayerBG2RGB,
    "BayerBG8": cv2.COLOR_BayerRG2RGB,
    "BayerGR8": cv2.COLOR_BayerGB2RGB,
    "BayerGB8": cv2.COLOR_BayerGR2RGB,
}
SUPPORTED_PIXEL_FORMATS = ("Mono8", "RGB8", "BGR8", *_BAYER_TO_RGB)


class PixelFormatError(ValueError):
    """A pixel format this producer cannot convert, or a buffer of the wrong size."""


def to_rgb(data: bytes | memoryview | np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """One image buffer of `pixel_format` as a fresh (height, width, 3) uint8 RGB array."""
    channels = 3 if pixel_format in ("RGB8", "BGR8") else 1
    if pixel_format not in SUPPORTED_PIXEL_FORMATS:
        raise PixelFormatError(
            f"pixel format {pixel_format!r} is not supported; use one of {', '.join(SUPPORTED_PIXEL_FORMATS)}"
        )
    flat = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    expected = width * height * channels
    if flat.size < expected:
        raise PixelFormatError(f"{pixel_format} buffer of {flat.size} bytes, {width}x{height} needs {expected}")
    image = (
        flat[:expected].reshape(height, width, channels) if channels == 3 else flat[:expected].reshape(height, width)
    )
    if pixel_format == "RGB8":
        return image.copy()
    if pixel_format == "BGR8":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if pixel_format == "Mono8":
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, _BAYER_TO_RGB[pixel_format])
