"""Frame sources: image folder, video file, camera index, RTSP/HTTP stream, synthetic belt scene.

Every source is an iterable of `Frame` and has `close()`. A source knows nothing about
Kafka; `producer.publisher` turns frames into messages and `producer.cli` wires them up.

`open_source("folder:PATH" | "video:PATH" | "camera:0" | "rtsp://..." | "synthetic", ...)`
parses the `--source` notation of the command line.
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from common.codecs import IMAGE_SUFFIXES, ImageDecodeError, decode_image, sniff_content_type
from common.schemas import utc_now

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


class SourceError(RuntimeError):
    """A source cannot be opened or read (message is meant for the operator)."""


@dataclass
class Frame:
    """One captured frame.

    `rgb` is (H, W, 3) uint8. `data`/`content_type` carry the bytes exactly as captured when
    the source had them encoded already (image folder), so they can be sent unchanged.
    `defective` / `defect_mask` are ground truth, known only for the synthetic scene.
    """

    rgb: np.ndarray
    index: int
    captured_at: datetime = field(default_factory=utc_now)
    name: str = ""
    data: bytes | None = None
    content_type: str | None = None
    defective: bool | None = None
    defect_mask: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


class FrameSource:
    """Base class: iterate for frames, `close()` to release devices/files (also a context manager)."""

    name = "source"
    live = False  # True for cameras/streams: no end, no --loop

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- image folder


def _natural_key(path: str) -> tuple[object, ...]:
    """'a/img2.png' < 'a/img10.png': digit runs compare as numbers, the rest case-insensitively
    (the exact path breaks ties, so the order is total and stable)."""
    parts = [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", path)]
    return (parts, path)


def list_images(folder: str | Path) -> list[Path]:
    """JPEG/PNG files under `folder` (recursive), in natural order of their relative paths."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"image folder {str(root)!r} does not exist or is not a directory")
    files = [
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


class FolderSource(FrameSource):
    """Every JPEG/PNG under a folder, sorted; the original bytes travel unchanged when possible.

    Files that cannot be decoded are skipped with a warning (a stray file must not stop a line).
    """

    def __init__(self, folder: str | Path, *, loop: bool = False, max_pixels: int = 40_000_000):
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        if not self.files:
            raise SourceError(f"image folder {str(self.folder)!r} holds no .jpg/.jpeg/.png files")
        self.loop = loop
        self.max_pixels = max_pixels
        self.name = f"folder:{self.folder}"

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            yielded = False
            for path in self.files:
                try:
                    data = path.read_bytes()
                    rgb = decode_image(data, max_bytes=len(data) + 1, max_pixels=self.max_pixels)
                except (OSError, ImageDecodeError) as exc:
                    log.warning("skipping %s: %s", path, exc)
                    continue
                yield Frame(
                    rgb=rgb,
                    index=index,
                    name=path.relative_to(self.folder).as_posix(),
                    data=data,
                    content_type=sniff_content_type(data),  # decode_image accepted it: JPEG or PNG
                )
                index += 1
                yielded = True
            if not self.loop or not yielded:
                return


# --------------------------------------------------------------------------- OpenCV captures


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
                    "no frame from %s (attempt %d/%d), reconnecting", self._redacted(), failures, self.reconnect_attempts
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


# --------------------------------------------------------------------------- synthetic scene

DEFECT_KINDS = ("scratch", "crack", "stain", "chip", "hole")


@dataclass
class _Part:
    x: float  # centre, pixels
    y: float
    radius: float
    colour: tuple[int, int, int]
    hole: float  # hole radius as a fraction of the radius (0 = solid disc)
    angle: float  # orientation of the printed mark, radians


class SyntheticSource(FrameSource):
    """Round parts (washers, caps) on a moving conveyor belt, drawn with OpenCV.

    The belt texture and the parts move `speed` pixels per frame from left to right; new parts
    enter on the left. A fraction `defect_rate` of frames (each frame independently, with its own
    random stream) carries one drawn defect (scratch, crack, stain, chip or hole) on the most
    visible part; `Frame.defective` and `Frame.defect_mask` give the ground truth.
    Entirely determined by `seed`: the same seed gives the same pixels.
    """

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 480,
        seed: int = 0,
        defect_rate: float = 0.1,
        speed: float | None = None,
        limit: int | None = None,
        noise: float = 2.0,
    ):
        if width < 64 or height < 64:
            raise SourceError(f"synthetic frames must be at least 64x64, got {width}x{height}")
        if not 0.0 <= defect_rate <= 1.0:
            raise SourceError(f"--defect-rate must be within [0, 1], got {defect_rate}")
        self.width, self.height = int(width), int(height)
        self.seed = int(seed)
        self.defect_rate = float(defect_rate)
        self.speed = float(speed) if speed is not None else max(2.0, self.width / 80.0)
        self.limit = limit
        self.noise = noise
        self.name = "synthetic"
        self._belt_top = int(self.height * 0.12)
        self._belt_bottom = int(self.height * 0.88)
        self._belt_texture = self._make_belt_texture()

    # -- scene pieces

    def _make_belt_texture(self) -> np.ndarray:
        """A horizontally periodic belt strip (so it can scroll), with fine fabric noise."""
        rng = np.random.default_rng([self.seed, 1])
        period = 64
        height = self._belt_bottom - self._belt_top
        base = 88 + rng.normal(0.0, 4.0, size=(height, period)).astype(np.float32)
        base += 6.0 * np.sin(np.linspace(0, 2 * np.pi, period, endpoint=False))[None, :]
        base[:, :2] -= 18.0  # a seam every `period` pixels shows the motion
        tiles = math.ceil(self.width / period) + 2
        strip = np.tile(base, (1, tiles))
        return np.clip(strip, 0, 255).astype(np.uint8)

    def _new_part(self, rng: np.random.Generator, x: float) -> _Part:
        belt_h = self._belt_bottom - self._belt_top
        radius = float(rng.uniform(0.16, 0.24) * belt_h)
        margin = radius + 0.04 * belt_h
        y = float(rng.uniform(self._belt_top + margin, self._belt_bottom - margin))
        palette = [(182, 184, 190), (200, 170, 60), (60, 110, 190), (190, 60, 50), (225, 225, 220)]
        colour = palette[int(rng.integers(len(palette)))]
        hole = float(rng.choice([0.0, 0.35, 0.45]))
        return _Part(x=x, y=y, radius=radius, colour=colour, hole=hole, angle=float(rng.uniform(0, 2 * np.pi)))

    def _spacing(self, rng: np.random.Generator) -> float:
        belt_h = self._belt_bottom - self._belt_top
        return float(rng.uniform(0.55, 0.85) * belt_h)

    def _draw_part(self, canvas: np.ndarray, background: np.ndarray, part: _Part) -> None:
        cx, cy, r = int(round(part.x)), int(round(part.y)), int(round(part.radius))
        shadow = (int(round(r * 0.08)), int(round(r * 0.10)))
        cv2.circle(canvas, (cx + shadow[0], cy + shadow[1]), r, (55, 55, 55), -1, cv2.LINE_AA)
        dark = tuple(int(c * 0.75) for c in part.colour)
        cv2.circle(canvas, (cx, cy), r, dark, -1, cv2.LINE_AA)
        cv2.circle(canvas, (cx, cy), int(r * 0.9), part.colour, -1, cv2.LINE_AA)
        highlight = tuple(min(255, int(c * 1.15) + 10) for c in part.colour)
        cv2.ellipse(canvas, (cx - r // 4, cy - r // 4), (r // 3, r // 5), -35, 0, 360, highlight, -1, cv2.LINE_AA)
        if part.hole > 0:
            hole_r = int(r * part.hole)
            cv2.circle(canvas, (cx, cy), hole_r + 2, dark, -1, cv2.LINE_AA)
            hole = np.zeros(canvas.shape[:2], np.uint8)
            cv2.circle(hole, (cx, cy), hole_r, 255, -1)
            canvas[hole > 0] = background[hole > 0]  # the belt shows through the hole
        else:  # a printed orientation mark on solid parts
            dx, dy = math.cos(part.angle) * r * 0.5, math.sin(part.angle) * r * 0.5
            cv2.line(canvas, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), dark, max(1, r // 12), cv2.LINE_AA)

    def _draw_defect(
        self, canvas: np.ndarray, background: np.ndarray, part: _Part, rng: np.random.Generator
    ) -> np.ndarray:
        """Draw one defect on `part`; returns its boolean mask (only where it lies on the part)."""
        kind = DEFECT_KINDS[int(rng.integers(len(DEFECT_KINDS)))]
        r = part.radius
        cx, cy = part.x, part.y
        mask = np.zeros(canvas.shape[:2], np.uint8)
        ang = float(rng.uniform(0, 2 * np.pi))
        # A point on the ring of the part (outside the hole), where the defect sits.
        ring = float(rng.uniform(max(part.hole + 0.15, 0.3), 0.75)) * r
        px, py = cx + math.cos(ang) * ring, cy + math.sin(ang) * ring
        colour: tuple[int, int, int]
        if kind == "scratch":
            length = float(rng.uniform(0.5, 0.9)) * r
            a2 = ang + math.pi / 2 + float(rng.uniform(-0.5, 0.5))
            p1 = (int(px - math.cos(a2) * length / 2), int(py - math.sin(a2) * length / 2))
            p2 = (int(px + math.cos(a2) * length / 2), int(py + math.sin(a2) * length / 2))
            thickness = max(2, int(r * 0.05))
            colour = (30, 30, 30) if sum(part.colour) > 300 else (235, 235, 235)
            cv2.line(mask, p1, p2, 255, thickness, cv2.LINE_AA)
        elif kind == "crack":
            points = [(px, py)]
            heading = ang + math.pi / 2
            for _ in range(6):
                heading += float(rng.uniform(-0.8, 0.8))
                step = r * 0.12
                points.append((points[-1][0] + math.cos(heading) * step, points[-1][1] + math.sin(heading) * step))
            cv2.polylines(mask, [np.array(points, np.int32)], False, 255, max(2, int(r * 0.04)), cv2.LINE_AA)
            colour = (20, 20, 20)
        elif kind == "stain":
            axes = (max(3, int(r * rng.uniform(0.15, 0.3))), max(3, int(r * rng.uniform(0.1, 0.2))))
            cv2.ellipse(mask, (int(px), int(py)), axes, float(np.degrees(ang)), 0, 360, 255, -1, cv2.LINE_AA)
            colour = (110, 70, 30)
        elif kind == "chip":
            # A bite out of the rim: the belt shows where material is missing.
            ex, ey = cx + math.cos(ang) * r, cy + math.sin(ang) * r
            cv2.circle(mask, (int(ex), int(ey)), max(4, int(r * rng.uniform(0.2, 0.3))), 255, -1, cv2.LINE_AA)
            colour = (-1, -1, -1)
        else:  # hole
            cv2.circle(mask, (int(px), int(py)), max(3, int(r * rng.uniform(0.08, 0.14))), 255, -1, cv2.LINE_AA)
            colour = (-1, -1, -1)
        part_mask = np.zeros_like(mask)
        cv2.circle(part_mask, (int(round(cx)), int(round(cy))), int(round(r)), 255, -1)
        if part.hole > 0:
            cv2.circle(part_mask, (int(round(cx)), int(round(cy))), int(r * part.hole), 0, -1)
        defect = (mask > 127) & (part_mask > 0)
        if colour[0] < 0:
            canvas[defect] = background[defect]
        else:
            canvas[defect] = colour
        return defect

    # -- iteration

    def _background_at(self, index: int) -> np.ndarray:
        background = np.full((self.height, self.width, 3), (120, 124, 128), np.uint8)  # machine frame
        period = 64
        shift = int(round(index * self.speed)) % period
        strip = self._belt_texture[:, period - shift : period - shift + self.width]
        background[self._belt_top : self._belt_bottom] = strip[:, :, None]
        cv2.line(background, (0, self._belt_top), (self.width, self._belt_top), (60, 60, 60), 2)
        cv2.line(background, (0, self._belt_bottom), (self.width, self._belt_bottom), (60, 60, 60), 2)
        return background

    def __iter__(self) -> Iterator[Frame]:
        layout_rng = np.random.default_rng([self.seed, 2])
        defect_rng = np.random.default_rng([self.seed, 3])
        noise_rng = np.random.default_rng([self.seed, 4])
        margin = 0.5 * (self._belt_bottom - self._belt_top)  # parts enter fully outside the view
        parts: list[_Part] = []
        x = self.width + margin
        while x > -margin:  # a full belt from the first frame
            parts.append(self._new_part(layout_rng, x))
            x -= self._spacing(layout_rng)
        next_gap = self._spacing(layout_rng)
        index = 0
        while self.limit is None or index < self.limit:
            background = self._background_at(index)
            canvas = background.copy()
            for part in parts:
                self._draw_part(canvas, background, part)
            defective = bool(defect_rng.random() < self.defect_rate)
            defect_mask = np.zeros((self.height, self.width), bool)
            if defective:
                part = max(parts, key=self._visible_fraction)
                defect_mask = self._draw_defect(canvas, background, part, defect_rng)
                if not defect_mask.any():  # pathological geometry: try once more
                    defect_mask = self._draw_defect(canvas, background, part, defect_rng)
            if self.noise > 0:
                noise = noise_rng.standard_normal(canvas.shape, dtype=np.float32) * self.noise
                canvas = np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)
            yield Frame(
                rgb=canvas,
                index=index,
                name=f"synthetic-{index:06d}",
                defective=defective,
                defect_mask=defect_mask,
            )
            index += 1
            # The belt moves; parts leaving on the right are dropped, new ones enter on the left.
            for part in parts:
                part.x += self.speed
            parts = [p for p in parts if p.x - p.radius < self.width]
            leftmost = min((p.x for p in parts), default=self.width + margin)
            while leftmost - next_gap > -margin:
                leftmost -= next_gap
                parts.append(self._new_part(layout_rng, leftmost))
                next_gap = self._spacing(layout_rng)

    def _visible_fraction(self, part: _Part) -> float:
        left, right = max(0.0, part.x - part.radius), min(float(self.width), part.x + part.radius)
        return max(0.0, right - left) / (2 * part.radius) - abs(part.x - self.width / 2) / (10 * self.width)


# --------------------------------------------------------------------------- factory


def open_source(
    spec: str,
    *,
    loop: bool = False,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    defect_rate: float = 0.1,
    limit: int | None = None,
) -> FrameSource:
    """Open a source from its command-line notation.

    `folder:PATH`, `video:PATH`, `camera:INDEX`, `rtsp://...` (also rtsps/rtmp/http(s) streams
    OpenCV's FFmpeg backend reads) or `synthetic`. A bare existing folder or file path also works.
    """
    spec = spec.strip()
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticSource(width=width, height=height, seed=seed, defect_rate=defect_rate, limit=limit)
    if spec.startswith("folder:"):
        return FolderSource(spec[len("folder:") :], loop=loop)
    if spec.startswith("video:"):
        return VideoSource(spec[len("video:") :], loop=loop)
    if spec.startswith("camera:"):
        index = spec[len("camera:") :]
        if not index.isdigit():
            raise SourceError(f"camera index must be a number, got {index!r} (e.g. camera:0)")
        return CameraSource(int(index))
    if spec.startswith(STREAM_SCHEMES):
        return StreamSource(spec)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, loop=loop)
    if path.is_file():
        return VideoSource(path, loop=loop)
    raise SourceError(
        f"unknown source {spec!r}: use folder:PATH, video:PATH, camera:INDEX, rtsp://HOST/PATH or synthetic"
    )
