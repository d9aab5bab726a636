"""Stage 2: tiling. One square crop per object instance; long many-part objects get a row of tiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A square window in frame coordinates (it may reach past the frame edge; that part is padded)."""

    component: int  # index into the frame's component list
    x: int
    y: int
    side: int


def _place(centre: float, side: int, limit: int) -> int:
    """Start of a window of `side` centred on `centre`, shifted to stay inside [0, limit) when it fits."""
    start = int(round(centre - side / 2))
    if side <= limit:
        start = min(max(start, 0), limit - side)
    return start


def plan_tiles(
    component: int,
    box: tuple[int, int, int, int],
    parts: int,
    frame_shape: tuple[int, int],
    min_side: int = 352,
    max_aspect: float = 1.5,
    min_parts: int = 20,
) -> list[Tile]:
    """Tiles for one component with bounding box (x, y, w, h) in a frame of (H, W).

    Default: one square of side max(min_side, longest box side) centred on the box.
    When the box's aspect exceeds `max_aspect` and the object has more than
    `min_parts` SAM parts, squares of side max(min_side, short side) slide along
    the long axis in steps of half the short side, so every part of the object
    is near the centre of some tile.
    """
    x, y, w, h = box
    height, width = frame_shape
    long_side, short_side = max(w, h), max(1, min(w, h))
    if long_side / short_side <= max_aspect or parts <= min_parts:
        side = max(min_side, long_side)
        return [Tile(component, _place(x + w / 2, side, width), _place(y + h / 2, side, height), side)]

    side = max(min_side, short_side)
    step = max(1, short_side // 2)
    horizontal = w >= h
    start, length = (x, w) if horizontal else (y, h)
    first, last = start + short_side / 2, start + length - short_side / 2
    centres = list(np.arange(first, last, step)) + [last]
    tiles = []
    for centre in centres:
        if horizontal:
            tiles.append(Tile(component, _place(centre, side, width), _place(y + h / 2, side, height), side))
        else:
            tiles.append(Tile(component, _place(x + w / 2, side, width), _place(centre, side, height), side))
    return list(dict.fromkeys(tiles))  # drop duplicates where clamping put two windows on one spot


def crop_tile(image: np.ndarray, tile: Tile) -> np.ndarray:
    """(H, W, C) image -> (side, side, C) crop; parts outside the frame are zero."""
    height, width = image.shape[:2]
    out = np.zeros((tile.side, tile.side) + image.shape[2:], dtype=image.dtype)
    x0, y0 = max(tile.x, 0), max(tile.y, 0)
    x1, y1 = min(tile.x + tile.side, width), min(tile.y + tile.side, height)
    if x1 > x0 and y1 > y0:
        out[y0 - tile.y : y1 - tile.y, x0 - tile.x : x1 - tile.x] = image[y0:y1, x0:x1]
    return out
