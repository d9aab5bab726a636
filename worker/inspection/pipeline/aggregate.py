"""Stage 5: put tile predictions back together into a frame map and a frame score."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from worker.inspection.pipeline.tiling import Tile


def paste_tiles(
    frame_shape: tuple[int, int], tiles: list[Tile], tile_maps: np.ndarray, tile_scores: np.ndarray
) -> np.ndarray:
    """Frame anomaly map from per-tile pixel maps.

    tile_maps: (T, s, s) maps in [0, 1] at model resolution; each is resized to its
    tile's side, scaled by the tile's score (the tile predictor is the more reliable
    one), and pasted; pixels covered by several tiles get the average.
    Returns (H, W) float32; pixels no tile covers are 0.
    """
    height, width = frame_shape
    total = np.zeros(frame_shape, dtype=np.float32)
    count = np.zeros(frame_shape, dtype=np.float32)
    for tile, tile_map, score in zip(tiles, tile_maps, tile_scores):
        resized = cv2.resize(tile_map.astype(np.float32), (tile.side, tile.side), interpolation=cv2.INTER_LINEAR)
        x0, y0 = max(tile.x, 0), max(tile.y, 0)
        x1, y1 = min(tile.x + tile.side, width), min(tile.y + tile.side, height)
        if x1 <= x0 or y1 <= y0:
            continue
        total[y0:y1, x0:x1] += score * resized[y0 - tile.y : y1 - tile.y, x0 - tile.x : x1 - tile.x]
        count[y0:y1, x0:x1] += 1.0
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def component_scores(
    tile_scores: np.ndarray, tile_components: Sequence[tuple[int, ...]], n_components: int
) -> np.ndarray:
    """Mean score of the tiles covering each component: tile_scores (T,), per tile the components it
    covers -> (C,); 0 for a component no tile covers."""
    owners = np.array([index for covered in tile_components for index in covered], dtype=int)
    weights = np.repeat(np.asarray(tile_scores, dtype=float), [len(covered) for covered in tile_components])
    sums = np.bincount(owners, weights=weights, minlength=n_components)
    counts = np.bincount(owners, minlength=n_components)
    return np.divide(sums, counts, out=np.zeros(n_components), where=counts > 0)


def image_score(scores: np.ndarray, top_fraction: float = 0.25) -> float:
    """Mean of the top `top_fraction` of component scores (at least one); 0 for no components."""
    if len(scores) == 0:
        return 0.0
    k = max(1, math.ceil(top_fraction * len(scores)))
    return float(np.sort(scores)[-k:].mean())
