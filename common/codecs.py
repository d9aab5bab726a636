"""Image and mask codecs shared by producer, worker and evaluation.

Decoding is where untrusted bytes meet the process: only the JPEG and PNG parsers
ever see them, and the byte and pixel limits are checked on the header before any
pixel buffer is allocated.
"""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin
from pycocotools import mask as coco_mask

from common.schemas import Heatmap, RleMask

_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
#: File suffixes of the formats `decode_image` reads (what an image folder may send as it is).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# How each accepted content type starts (PIL's own JPEG and PNG checks use the same bytes).
_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
# Building the plugin's image file parses the header only. Image.open would do the same
# plus PIL's process-wide MAX_IMAGE_PIXELS check, which `max_pixels` replaces here.
_HEADER_PARSERS = {"image/jpeg": JpegImagePlugin.JpegImageFile, "image/png": PngImagePlugin.PngImageFile}


class ImageDecodeError(ValueError):
    """The bytes are not an acceptable image.

    `reason` is a short machine-friendly code: `empty`, `too_large` (bytes),
    `content_type` (unsupported or not matching the payload), `too_many_pixels`
    (by the header, before decoding) or `undecodable` (not JPEG/PNG, corrupt, truncated).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def sniff_content_type(data: bytes) -> str | None:
    """The accepted content type whose signature `data` starts with, or None."""
    return next((kind for kind, signature in _SIGNATURES.items() if data.startswith(signature)), None)


def decode_image(
    data: bytes,
    content_type: str | None = None,
    *,
    max_bytes: int = 50_000_000,
    max_pixels: int = 40_000_000,
    max_side: int | None = None,
) -> np.ndarray:
    """Decode JPEG/PNG bytes into an RGB array of shape (H, W, 3), dtype uint8.

    `content_type`, when given, must be what the bytes are. Raises ImageDecodeError
    (and nothing else) for empty, oversized, mislabelled, truncated or undecodable input.
    `max_side`: scaled down (aspect kept) to at most this many pixels a side, before the RGB
    conversion; a JPEG is decoded at a reduced scale already (its draft mode).
    """
    image, actual = _checked_header(data, content_type, max_bytes, max_pixels)
    try:
        if max_side is not None and actual == "image/jpeg":
            image.draft("RGB", (max_side, max_side))  # decodes at 1/2, 1/4 or 1/8 scale where that is enough
        image.load()
        if max_side is not None and max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)  # in place, in the image's own mode
        return np.asarray(image.convert("RGB"))
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise ImageDecodeError("undecodable", f"cannot decode {_FORMATS[actual]} image: {_describe(exc)}") from exc


def image_size(data: bytes, content_type: str | None = None, *, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) by the header, with the checks of `decode_image` and nothing decoded."""
    image, _ = _checked_header(data, content_type, max_bytes, max_pixels)
    return image.size


def _checked_header(data: bytes, content_type: str | None, max_bytes: int, max_pixels: int) -> tuple[Image.Image, str]:
    if not data:
        raise ImageDecodeError("empty", "frame payload is empty")
    if len(data) > max_bytes:
        raise ImageDecodeError("too_large", f"frame is {len(data)} bytes, limit is {max_bytes}")
    if content_type is not None and content_type not in _FORMATS:
        raise ImageDecodeError("content_type", f"unsupported content type {content_type!r}")
    actual = sniff_content_type(data)
    if actual is None:
        raise ImageDecodeError("undecodable", f"payload is not a JPEG or PNG image (starts with {data[:8].hex()})")
    if content_type is not None and actual != content_type:
        raise ImageDecodeError("content_type", f"payload is {_FORMATS[actual]}, header says {content_type}")
    image = _parse_header(data, actual)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_many_pixels", f"image header claims {width}x{height} = {width * height} pixels, limit is {max_pixels}"
        )
    return image, actual


def _parse_header(data: bytes, content_type: str) -> Image.Image:
    try:
        image = _HEADER_PARSERS[content_type](io.BytesIO(data))
    except Exception as exc:
        raise ImageDecodeError(
            "undecodable", f"cannot read the {_FORMATS[content_type]} header: {_describe(exc)}"
        ) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("undecodable", f"image header claims {width}x{height} pixels")
    return image


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


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
    # Area-average the float map down before quantising: 5x cheaper than quantising the whole frame first.
    small = cv2.resize(np.asarray(anomaly_map, dtype=np.float32), size, interpolation=cv2.INTER_AREA)
    grey = Image.fromarray(np.clip(small * 255.0, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")  # `optimize` costs up to 70% more time for 0-2% fewer bytes on these maps
    return Heatmap(width=size[0], height=size[1], png_base64=base64.b64encode(buffer.getvalue()).decode("ascii"))
