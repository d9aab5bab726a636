"""Image and mask codecs shared by producer, worker and evaluation.

Decoding is where untrusted bytes meet the process, so limits are checked on the
header before any pixel is decompressed.
"""
from __future__ import annotations

import base64
import io
import warnings

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from common.schemas import Heatmap, RleMask

_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}


class ImageDecodeError(ValueError):
    """The bytes are not an acceptable image. `reason` is a short machine-friendly code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def decode_image(
    data: bytes,
    content_type: str | None = None,
    *,
    max_bytes: int = 50_000_000,
    max_pixels: int = 40_000_000,
) -> np.ndarray:
    """Decode JPEG/PNG bytes into an RGB array of shape (H, W, 3), dtype uint8.

    Raises ImageDecodeError (and nothing else) for empty, oversized, truncated,
    mislabelled or undecodable input.
    """
    if not data:
        raise ImageDecodeError("empty", "frame payload is empty")
    if len(data) > max_bytes:
        raise ImageDecodeError("too_large", f"frame is {len(data)} bytes, limit is {max_bytes}")
    if content_type is not None and content_type not in _FORMATS:
        raise ImageDecodeError("content_type", f"unsupported content type {content_type!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise ImageDecodeError(
                    "too_many_pixels", f"image is {width}x{height}, limit is {max_pixels} pixels"
                )
            if content_type is not None and image.format != _FORMATS[content_type]:
                raise ImageDecodeError(
                    "content_type", f"payload is {image.format}, header says {content_type}"
                )
            if image.format not in _FORMATS.values():
                raise ImageDecodeError("format", f"unsupported image format {image.format}")
            image.load()
            rgb = np.asarray(image.convert("RGB"))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError("too_many_pixels", str(exc)) from exc
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise ImageDecodeError("undecodable", f"cannot decode image: {exc}") from exc
    return rgb


def encode_image(rgb: np.ndarray, content_type: str = "image/jpeg", quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as JPEG or PNG bytes."""
    fmt = _FORMATS[content_type]
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def mask_to_rle(mask: np.ndarray) -> RleMask:
    """(H, W) boolean mask -> COCO compressed RLE."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return RleMask(size=(int(encoded["size"][0]), int(encoded["size"][1])), counts=encoded["counts"].decode("ascii"))


def rle_to_mask(rle: RleMask) -> np.ndarray:
    """COCO compressed RLE -> (H, W) boolean mask."""
    decoded = coco_mask.decode({"size": list(rle.size), "counts": rle.counts.encode("ascii")})
    return decoded.astype(bool)


def heatmap_to_png(anomaly_map: np.ndarray, max_side: int = 128) -> Heatmap:
    """(H, W) float map in [0, 1] -> downscaled 8-bit grey PNG, base64."""
    height, width = anomaly_map.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = Image.fromarray(np.clip(anomaly_map * 255.0, 0, 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG", optimize=True)
    return Heatmap(width=size[0], height=size[1], png_base64=base64.b64encode(buffer.getvalue()).decode("ascii"))


def png_to_heatmap(heatmap: Heatmap) -> np.ndarray:
    """Inverse of heatmap_to_png: (h, w) float32 in [0, 1] at the stored resolution."""
    grey = Image.open(io.BytesIO(base64.b64decode(heatmap.png_base64)))
    return np.asarray(grey, dtype=np.float32) / 255.0
