"""Still synthetic production-line frames with exact part and defect masks, drawn with the belt scene.

Used by the tests and by scripts that measure a mask against the truth (scripts/isnet_input_sides.py).

``make_synthetic_scene`` puts ``n_objects`` whole parts (the producer's caps and washers,
``producer.sources.synthetic``) in a row on the belt, optionally with defects on chosen
parts, and returns exact per-part masks and the defect mask. It is the same drawing as
``linewatch-producer --source synthetic`` (and the bench), only the parts stand still and
are all fully in view.

Measured with the real IS-Net (fp16 ``medium`` export, threshold 0.5): the default
640x480, 3-part scene gave exactly one component per part, covering at least 98% of it,
for seeds 0..11 (each with one defect of another kind).

Example::

    scene = make_synthetic_scene(seed=0, size=(480, 640), n_objects=3, defects={1: "scratch"})
    image, object_masks, defect_mask, objects = scene
    # image: (480, 640, 3) uint8 RGB; object_masks: 3 x (480, 640) bool;
    # defect_mask: (480, 640) bool (all False without defects); objects: 3 x SceneObject
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from producer.sources.synthetic import (
    DEFECT_KINDS,
    HOLE_FRACTIONS,
    PART_COLOURS,
    Part,
    add_noise,
    belt_background,
    belt_rows,
    belt_texture,
    draw_defect,
    draw_part,
    part_mask,
)

__all__ = ["DEFECT_KINDS", "SceneObject", "SyntheticScene", "make_synthetic_scene", "place_parts"]


@dataclass(frozen=True)
class SceneObject:
    """One drawn part.

    kind: "washer" (with a hole) or "cap" (solid); center: (row, col) of a pixel on the part
    (its centre, or the middle of the ring for a washer); radius in pixels; angle: orientation
    of the printed mark in radians; defect: the defect kind drawn on it, or ``None``.
    """

    kind: str
    center: tuple[float, float]
    radius: float
    angle: float
    defect: str | None = None


class SyntheticScene(NamedTuple):
    """``image``: HxWx3 uint8 RGB. ``object_masks``: one HxW bool mask per object
    (same order as ``objects``, disjoint). ``defect_mask``: HxW bool union of all drawn
    defects (a subset of the defective objects' masks). ``objects``: metadata."""

    image: np.ndarray
    object_masks: list[np.ndarray]
    defect_mask: np.ndarray
    objects: list[SceneObject]


def place_parts(rng: np.random.Generator, n: int, height: int, width: int, scale: float = 1.0) -> list[Part]:
    """`n` whole, well separated parts in a row along the belt's centre line (sizes as the producer's)."""
    top, bottom = belt_rows(height)
    belt_h = bottom - top
    pitch = width / n
    parts = []
    for i in range(n):
        radius = float(rng.uniform(0.16, 0.24) * belt_h * scale)
        radius = min(radius, 0.36 * pitch, 0.4 * belt_h)  # room for the shadow and a gap to the next part
        slack = max(0.0, 0.5 * pitch - 1.25 * radius)
        x = pitch * (i + 0.5) + float(rng.uniform(-slack, slack))
        y = (top + bottom) / 2 + float(rng.uniform(-0.05, 0.05) * belt_h)
        colour = PART_COLOURS[int(rng.integers(len(PART_COLOURS)))]
        hole = float(rng.choice(HOLE_FRACTIONS))
        parts.append(Part(x=x, y=y, radius=radius, colour=colour, hole=hole, angle=float(rng.uniform(0, 2 * np.pi))))
    return parts


def make_synthetic_scene(
    seed: int = 0,
    size: tuple[int, int] = (480, 640),
    n_objects: int = 3,
    defects: Mapping[int, str] | Iterable[int] | None = None,
    object_scale: float = 1.0,
    noise_sigma: float = 2.0,
) -> SyntheticScene:
    """Draw a frame of ``n_objects`` parts on the belt; the same arguments always give the same scene.

    defects: which parts get a defect: a mapping ``{object_index: kind}`` with kind in
    :data:`DEFECT_KINDS`, or an iterable of indices (each gets a "scratch"). ``None``: no defects.
    object_scale multiplies the producer's part radius; noise_sigma is the sensor noise (grey levels).
    """
    height, width = size
    if defects is None:
        defect_map: dict[int, str] = {}
    elif isinstance(defects, Mapping):
        defect_map = dict(defects)
    else:
        defect_map = {int(i): "scratch" for i in defects}
    for i, kind in defect_map.items():
        if not 0 <= i < n_objects:
            raise ValueError(f"defect on object {i}, but there are {n_objects} objects")
        if kind not in DEFECT_KINDS:
            raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    rng = np.random.default_rng(seed)
    parts = place_parts(rng, n_objects, height, width, object_scale)
    background = belt_background(belt_texture(width, height, seed), width, height)
    canvas = background.copy()
    for part in parts:
        draw_part(canvas, background, part)
    defect_mask = np.zeros((height, width), bool)
    for i, kind in sorted(defect_map.items()):
        drawn = draw_defect(canvas, background, parts[i], rng, kind)
        if not drawn.any():  # pathological geometry: once more, as the producer does
            drawn = draw_defect(canvas, background, parts[i], rng, kind)
        defect_mask |= drawn
    image = add_noise(canvas, rng, noise_sigma) if noise_sigma > 0 else canvas
    objects = [
        SceneObject(
            "washer" if part.hole else "cap",
            (part.y, part.x + (part.radius * (1 + part.hole) / 2 if part.hole else 0.0)),
            part.radius,
            part.angle,
            defect_map.get(i),
        )
        for i, part in enumerate(parts)
    ]
    return SyntheticScene(image, [part_mask((height, width), part) for part in parts], defect_mask, objects)
