"""OpenCV captures: video file, camera index, RTSP/HTTP stream (with reconnects for live ones)."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import cv2

from producer.sources.base import Frame, FrameSource, SourceError

log = logging.getLogger("producer.sources")

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


class CaptureSource(FrameSource):
    """Video file, camera index or network stream through cv2.VideoCapture (BGR -> RGB)."""

    def __init__(
        self,
        target: str | int,
        *,
        loop: bool = False,
        live: bool | None = None,
        reconnect_attempts: int = 5,
        reconnect_delay_s: float = 1.0,
    ):
        self.target = target
        self.live = live if live is not None else not (isinstance(target, str) and Path(target).is_file())
        self.loop = loop and not self.live
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.name = f"camera:{target}" if isinstance(target, int) else self._redacted()
        self._capture = self._open()

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self.target, str) and not self.live and not Path(self.target).is_file():
            raise SourceError(f"video file {self.target!r} does not exist")
        if isinstance(self.target, str) and self.target.startswith(STREAM_SCHEMES):
            capture = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG)
        else:
            capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            what = "camera" if isinstance(self.target, int) else ("stream" if self.live else "video file")
            raise SourceError(f"cannot open {what} {self._redacted()!r} with OpenCV")
        return capture

    def _redacted(self) -> str:
        """The target without any user:password@ part (RTSP URLs often carry credentials)."""
        return re.sub(r"://[^/@]*@", "://***@", str(self.target))

    @property
    def fps(self) -> float:
        """The frame rate the container/camera reports (0 when unknown)."""
        value = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return value if math.isfinite(value) and value > 0 else 0.0

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        failures = 0
        since_open = 0  # frames read since the capture was (re)opened
        while True:
            ok, bgr = self._capture.read()
            if ok and bgr is not None:
                failures = 0
                since_open += 1
                if bgr.ndim == 2:
                    bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
                yield Frame(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index=index, name=self.name)
                index += 1
                continue
            if self.loop and since_open > 0:
                # Rewind by reopening: more reliable than seeking across codecs.
                self._capture.release()
                self._capture = self._open()
                since_open = 0
                continue
            if self.live and failures < self.reconnect_attempts:
                failures += 1
                log.warning(
                    "no frame from %s (attempt %d/%d), reconnecting",
                    self._redacted(),
                    failures,
                    self.reconnect_attempts,
                )
                time.sleep(self.reconnect_delay_s)
                self._capture.release()
                try:
                    self._capture = self._open()
                except SourceError as exc:
                    log.warning("%s", exc)
                continue
            return

    def close(self) -> None:
        self._capture.release()


class VideoSource(CaptureSource):
    def __init__(self, path: str | Path, *, loop: bool = False):
        super().__init__(str(path), loop=loop, live=False)


class CameraSource(CaptureSource):
    def __init__(self, index: int, **kwargs: object):
        super().__init__(int(index), live=True, **kwargs)  # type: ignore[arg-type]


class StreamSource(CaptureSource):
    def __init__(self, url: str, **kwargs: object):
        super().__init__(url, live=True, **kwargs)  # type: ignore[arg-type]
