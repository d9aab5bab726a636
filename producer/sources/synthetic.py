"""The synthetic scene: round parts on a conveyor belt, drawn with OpenCV (numpy and cv2 only).

This is the one scene generator of the project: `SyntheticSource` (producer `--source
synthetic`, the bench, the demo) animates it, and the tests draw still scenes and
dataset trees with the same pieces: `belt_texture` / `belt_background`, `Part`,
`draw_part`, `draw_defect` and `part_mask`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from producer.sources.base import Frame, FrameSource, SourceError

DEFECT_KINDS = ("scratch", "crack", "stain", "chip", "hole")
PART_COLOURS = [(182, 184, 190), (200, 170, 60), (60, 110, 190), (190, 60, 50), (225, 225, 220)]
HOLE_FRACTIONS = (0.0, 0.35, 0.45)  # hole radius / part radius: solid caps and two sizes of washers
BELT_PERIOD = 64  # pixels: the belt texture repeats (and scrolls) with this period
MACHINE_RGB = (120, 124, 128)
# What runs on the belt: (colours, hole fractions) to draw parts from. A real line runs one product;
# "mixed" (every colour, caps and washers) is the default scene of the tests and the bench.
PARTS = {
    "mixed": (PART_COLOURS, HOLE_FRACTIONS),
    "washers": ([PART_COLOURS[0]], (HOLE_FRACTIONS[1],)),  # one product: grey metal washers
    "caps": ([PART_COLOURS[1]], (0.0,)),  # one product: yellow solid caps
}
RGB = tuple[int, int, int]
# Ground truth on the wire, synthetic sources only: "1" when the frame carries a drawn defect, else "0".
DEFECT_HEADER = "lw-synthetic-defect"


def truth_headers(frame: Frame) -> list[tuple[str, bytes]]:
    """The `lw-synthetic-defect` header of a frame whose truth is known (the synthetic scene); else none."""
    return [] if frame.defective is None else [(DEFECT_HEADER, b"1" if frame.defective else b"0")]


@dataclass
class Part:
    x: float  # centre, pixels
    y: float
    radius: float
    colour: RGB
    hole: float  # hole radius as a fraction of the radius (0 = solid disc)
    angle: float  # orientation of the printed mark, radians


def belt_rows(height: int) -> tuple[int, int]:
    """First and last row (exclusive) of the belt in a frame of `height` rows."""
    return int(height * 0.12), int(height * 0.88)


def belt_texture(width: int, height: int, seed: int) -> np.ndarray:
    """A horizontally periodic belt strip (so it can scroll), with fine fabric noise."""
    rng = np.random.default_rng([seed, 1])
    top, bottom = belt_rows(height)
    base = 88 + rng.normal(0.0, 4.0, size=(bottom - top, BELT_PERIOD)).astype(np.float32)
    base += 6.0 * np.sin(np.linspace(0, 2 * np.pi, BELT_PERIOD, endpoint=False))[None, :]
    base[:, :2] -= 18.0  # a seam every period shows the motion
    tiles = math.ceil(width / BELT_PERIOD) + 2
    strip = np.tile(base, (1, tiles))
    return np.clip(strip, 0, 255).astype(np.uint8)


def belt_background(texture: np.ndarray, width: int, height: int, shift: float = 0.0) -> np.ndarray:
    """(H, W, 3) uint8: the machine frame with the belt texture moved `shift` pixels to the right."""
    top, bottom = belt_rows(height)
    background = np.full((height, width, 3), MACHINE_RGB, np.uint8)
    offset = int(round(shift)) % BELT_PERIOD
    strip = texture[:, BELT_PERIOD - offset : BELT_PERIOD - offset + width]
    background[top:bottom] = strip[:, :, None]
    cv2.line(background, (0, top), (width, top), (60, 60, 60), 2)
    cv2.line(background, (0, bottom), (width, bottom), (60, 60, 60), 2)
    return background


def part_mask(shape: tuple[int, int], part: Part) -> np.ndarray:
    """(H, W) bool: the pixels of `part` (its disc without the hole)."""
    mask = np.zeros(shape, np.uint8)
    centre = (int(round(part.x)), int(round(part.y)))
    cv2.circle(mask, centre, int(round(part.radius)), 255, -1)
    if part.hole > 0:
        cv2.circle(mask, centre, int(part.radius * part.hole), 0, -1)
    return mask > 0


def draw_part(canvas: np.ndarray, background: np.ndarray, part: Part) -> None:
    """Draw `part` with its shadow on `canvas` (in place); the belt shows through a washer's hole."""
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
        canvas[hole > 0] = background[hole > 0]
    else:  # a printed orientation mark on solid parts
        dx, dy = math.cos(part.angle) * r * 0.5, math.sin(part.angle) * r * 0.5
        cv2.line(canvas, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), dark, max(1, r // 12), cv2.LINE_AA)


def draw_defect(
    canvas: np.ndarray,
    background: np.ndarray,
    part: Part,
    rng: np.random.Generator,
    kind: str | None = None,
    colour: RGB | None = None,
) -> np.ndarray:
    """Draw one defect on `part` (in place); returns its (H, W) bool mask (only where it lies on the part).

    kind: one of DEFECT_KINDS, or None to draw it from `rng`. colour: paint the defect in this
    RGB instead of its own colour (chips and holes show the belt unless a colour is given).
    """
    if kind is None:
        kind = DEFECT_KINDS[int(rng.integers(len(DEFECT_KINDS)))]
    elif kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    r = part.radius
    cx, cy = part.x, part.y
    mask = np.zeros(canvas.shape[:2], np.uint8)
    ang = float(rng.uniform(0, 2 * np.pi))
    # A point on the ring of the part (outside the hole), where the defect sits.
    ring = float(rng.uniform(max(part.hole + 0.15, 0.3), 0.75)) * r
    px, py = cx + math.cos(ang) * ring, cy + math.sin(ang) * ring
    own: RGB | None  # None: the belt shows through
    if kind == "scratch":
        length = float(rng.uniform(0.5, 0.9)) * r
        a2 = ang + math.pi / 2 + float(rng.uniform(-0.5, 0.5))
        p1 = (int(px - math.cos(a2) * length / 2), int(py - math.sin(a2) * length / 2))
        p2 = (int(px + math.cos(a2) * length / 2), int(py + math.sin(a2) * length / 2))
        thickness = max(2, int(r * 0.05))
        own = (30, 30, 30) if sum(part.colour) > 300 else (235, 235, 235)
        cv2.line(mask, p1, p2, 255, thickness, cv2.LINE_AA)
    elif kind == "crack":
        points = [(px, py)]
        heading = ang + math.pi / 2
        for _ in range(6):
            heading += float(rng.uniform(-0.8, 0.8))
            step = r * 0.12
            points.append((points[-1][0] + math.cos(heading) * step, points[-1][1] + math.sin(heading) * step))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 255, max(2, int(r * 0.04)), cv2.LINE_AA)
        own = (20, 20, 20)
    elif kind == "stain":
        axes = (max(3, int(r * rng.uniform(0.15, 0.3))), max(3, int(r * rng.uniform(0.1, 0.2))))
        cv2.ellipse(mask, (int(px), int(py)), axes, float(np.degrees(ang)), 0, 360, 255, -1, cv2.LINE_AA)
        own = (110, 70, 30)
    elif kind == "chip":
        # A bite out of the rim: the belt shows where material is missing.
        ex, ey = cx + math.cos(ang) * r, cy + math.sin(ang) * r
        cv2.circle(mask, (int(ex), int(ey)), max(4, int(r * rng.uniform(0.2, 0.3))), 255, -1, cv2.LINE_AA)
        own = None
    else:  # hole
        cv2.circle(mask, (int(px), int(py)), max(3, int(r * rng.uniform(0.08, 0.14))), 255, -1, cv2.LINE_AA)
        own = None
    defect = (mask > 127) & part_mask(mask.shape, part)
    paint = colour if colour is not None else own
    if paint is None:
        canvas[defect] = background[defect]
    else:
        canvas[defect] = paint
    return defect


def add_noise(canvas: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """`canvas` plus Gaussian sensor noise of `sigma` grey levels (a new uint8 array)."""
    noise = rng.standard_normal(canvas.shape, dtype=np.float32) * sigma
    return np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)


class SyntheticSource(FrameSource):
    """Round parts (washers, caps) on a moving conveyor belt.

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
        parts: str = "mixed",
    ):
        if width < 64 or height < 64:
            raise SourceError(f"synthetic frames must be at least 64x64, got {width}x{height}")
        if parts not in PARTS:
            raise SourceError(f"unknown synthetic parts {parts!r}; expected one of {sorted(PARTS)}")
        if not 0.0 <= defect_rate <= 1.0:
            raise SourceError(f"--defect-rate must be within [0, 1], got {defect_rate}")
        self.width, self.height = int(width), int(height)
        self.seed = int(seed)
        self.defect_rate = float(defect_rate)
        self.speed = float(speed) if speed is not None else max(2.0, self.width / 80.0)
        self.limit = limit
        self.noise = noise
        self.colours, self.holes = PARTS[parts]
        self.name = "synthetic"
        self._belt_top, self._belt_bottom = belt_rows(self.height)
        self._belt_texture = belt_texture(self.width, self.height, self.seed)

    def _new_part(self, rng: np.random.Generator, x: float) -> Part:
        belt_h = self._belt_bottom - self._belt_top
        radius = float(rng.uniform(0.16, 0.24) * belt_h)
        margin = radius + 0.04 * belt_h
        y = float(rng.uniform(self._belt_top + margin, self._belt_bottom - margin))
        colour = self.colours[int(rng.integers(len(self.colours)))]
        hole = float(rng.choice(self.holes))
        return Part(x=x, y=y, radius=radius, colour=colour, hole=hole, angle=float(rng.uniform(0, 2 * np.pi)))

    def _spacing(self, rng: np.random.Generator) -> float:
        belt_h = self._belt_bottom - self._belt_top
        return float(rng.uniform(0.55, 0.85) * belt_h)

    def __iter__(self) -> Iterator[Frame]:
        layout_rng = np.random.default_rng([self.seed, 2])
        defect_rng = np.random.default_rng([self.seed, 3])
        noise_rng = np.random.default_rng([self.seed, 4])
        margin = 0.5 * (self._belt_bottom - self._belt_top)  # parts enter fully outside the view
        parts: list[Part] = []
        x = self.width + margin
        while x > -margin:  # a full belt from the first frame
            parts.append(self._new_part(layout_rng, x))
            x -= self._spacing(layout_rng)
        next_gap = self._spacing(layout_rng)
        index = 0
        while self.limit is None or index < self.limit:
            background = belt_background(self._belt_texture, self.width, self.height, index * self.speed)
            canvas = background.copy()
            for part in parts:
                draw_part(canvas, background, part)
            defective = bool(defect_rng.random() < self.defect_rate)
            defect_mask = np.zeros((self.height, self.width), bool)
            if defective:
                part = max(parts, key=self._visible_fraction)
                defect_mask = draw_defect(canvas, background, part, defect_rng)
                if not defect_mask.any():  # pathological geometry: try once more
                    defect_mask = draw_defect(canvas, background, part, defect_rng)
            if self.noise > 0:
                canvas = add_noise(canvas, noise_rng, self.noise)
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

    def _visible_fraction(self, part: Part) -> float:
        left, right = max(0.0, part.x - part.radius), min(float(self.width), part.x + part.radius)
        return max(0.0, right - left) / (2 * part.radius) - abs(part.x - self.width / 2) / (10 * self.width)
