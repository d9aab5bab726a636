"""Frame sources: image folder, video file, camera index, RTSP/HTTP stream, synthetic belt scene.

Every source is an iterable of `Frame` and has `close()`. A source knows nothing about
Kafka; `producer.publisher` turns frames into messages and `producer.cli` wires them up.

`open_source("folder:PATH" | "video:PATH" | "camera:0" | "rtsp://..." | "genicam:ID" | "synthetic", ...)`
parses the `--source` notation of the command line.

Modules: `base` (Frame, FrameSource, SourceError), `folder`, `capture` (video, camera,
stream), `genicam` (GigE Vision / USB3 Vision cameras through Aravis; `pixels` converts their
pixel formats) and `synthetic` (the belt scene, also drawn by the bench and the tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.codecs import IMAGE_SUFFIXES
from producer.sources.base import Frame, FrameSource, SourceError
from producer.sources.capture import STREAM_SCHEMES, CameraSource, CaptureSource, StreamSource, VideoSource
from producer.sources.folder import FolderSource, list_images
from producer.sources.synthetic import DEFECT_KINDS, SyntheticSource

__all__ = [
    "DEFECT_KINDS",
    "IMAGE_SUFFIXES",
    "STREAM_SCHEMES",
    "CameraSource",
    "CaptureSource",
    "FolderSource",
    "Frame",
    "FrameSource",
    "SourceError",
    "StreamSource",
    "SyntheticSource",
    "VideoSource",
    "list_images",
    "open_source",
]


def open_source(
    spec: str,
    *,
    loop: bool = False,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    defect_rate: float = 0.1,
    limit: int | None = None,
    parts: str = "mixed",
    genicam: Mapping[str, Any] | None = None,
) -> FrameSource:
    """Open a source from its command-line notation.

    `folder:PATH`, `video:PATH`, `camera:INDEX`, `rtsp://...` (also rtsps/rtmp/http(s) streams
    OpenCV's FFmpeg backend reads), `genicam:` (the first GenICam camera found) or `genicam:ID`
    (Aravis id, serial number or IP address; `genicam` holds GenICamSource's options) or
    `synthetic`. A bare existing folder or file path also works.
    """
    spec = spec.strip()
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticSource(width=width, height=height, seed=seed, defect_rate=defect_rate, limit=limit, parts=parts)
    if spec.startswith("folder:"):
        return FolderSource(spec[len("folder:") :], loop=loop)
    if spec.startswith("video:"):
        return VideoSource(spec[len("video:") :], loop=loop)
    if spec.startswith("camera:"):
        index = spec[len("camera:") :]
        if not index.isdigit():
            raise SourceError(f"camera index must be a number, got {index!r} (e.g. camera:0)")
        return CameraSource(int(index))
    if spec == "genicam" or spec.startswith("genicam:"):
        from producer.sources.genicam import GenICamSource  # needs Aravis; only imported when asked for

        return GenICamSource(spec[len("genicam:") :] or None, **dict(genicam or {}))
    if spec.startswith(STREAM_SCHEMES):
        return StreamSource(spec)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, loop=loop)
    if path.is_file():
        return VideoSource(path, loop=loop)
    raise SourceError(
        f"unknown source {spec!r}: use folder:PATH, video:PATH, camera:INDEX, rtsp://HOST/PATH, genicam:ID or synthetic"
    )
