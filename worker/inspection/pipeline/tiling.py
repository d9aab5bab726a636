"""Stage 2: tiling. One square crop per object instance; long many-part objects get a row of tiles.

`share_tiles` (models.tiles=shared) then lets small instances that fit in one window share it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A square window in frame coordinates (it may reach past the frame edge; that part is padded)."""

    components: tuple[int, ...]  # the instances it covers: indices into the frame's component list
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
        return [Tile((component,), _place(x + w / 2, side, width), _place(y + h / 2, side, height), side)]

    side = max(min_side, short_side)
    step = max(1, short_side // 2)
    horizontal = w >= h
    start, length = (x, w) if horizontal else (y, h)
    first, last = start + short_side / 2, start + length - short_side / 2
    centres = list(np.arange(first, last, step)) + [last]
    tiles = []
    for centre in centres:
        if horizontal:
            tiles.append(Tile((component,), _place(centre, side, width), _place(y + h / 2, side, height), side))
        else:
            tiles.append(Tile((component,), _place(x + w / 2, side, width), _place(centre, side, height), side))
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


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Union of two (x0, y0, x1, y1) boxes."""
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def share_tiles(
    tiles: Sequence[Tile], boxes: Sequence[tuple[int, int, int, int]], frame_shape: tuple[int, int], min_side: int = 352
) -> list[Tile]:
    """Fewer tiles at the same scale: small instances that fit in one window share it.

    An instance whose only tile is a plain `min_side` square (box x, y, w, h within it) joins the
    group whose union box grows least and still fits in `min_side` x `min_side`, else starts one;
    instances are taken left to right. Each group gets one `min_side` tile centred on its union box,
    so every member lies wholly inside it and is seen at the size its own tile gave it: only its
    place in the window changes. Larger instances and rows of tiles are kept as they are.
    """
    height, width = frame_shape
    tiles_of = Counter(index for tile in tiles for index in tile.components)
    kept, small = [], []
    for tile in tiles:
        (index,) = tile.components  # plan_tiles gives one instance per tile
        if tile.side == min_side and tiles_of[index] == 1:
            small.append(index)
        else:
            kept.append(tile)
    members: list[list[int]] = []
    unions: list[tuple[int, int, int, int]] = []  # per group, (x0, y0, x1, y1)
    for index in sorted(small, key=lambda i: (boxes[i][0], boxes[i][1], i)):
        x, y, w, h = boxes[index]
        corners = (x, y, x + w, y + h)
        grown = [_union(union, corners) for union in unions]
        fitting = [
            (_area(bigger) - _area(union), group)
            for group, (bigger, union) in enumerate(zip(grown, unions))
            if bigger[2] - bigger[0] <= min_side and bigger[3] - bigger[1] <= min_side
        ]
        if fitting:
            _, group = min(fitting)  # the least growth; ties: the earliest group
            members[group].append(index)
            unions[group] = grown[group]
        else:
            members.append([index])
            unions.append(corners)
    for group, (x0, y0, x1, y1) in zip(members, unions):
        left, top = _place((x0 + x1) / 2, min_side, width), _place((y0 + y1) / 2, min_side, height)
        kept.append(Tile(tuple(sorted(group)), left, top, min_side))
    return sorted(kept, key=lambda tile: tile.components)
