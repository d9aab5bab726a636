"""models.tiles=shared: small instances that fit in one window share its tile, at their own scale."""

import numpy as np
import pytest

from common.settings import ModelSettings
from worker.inspection.pipeline.tiling import plan_tiles, share_tiles

FRAME = (480, 640)


def _planned(boxes, parts=None, frame_shape=FRAME, min_side=352):
    parts = parts or [1] * len(boxes)
    return [
        tile
        for index, (box, count) in enumerate(zip(boxes, parts))
        for tile in plan_tiles(index, box, count, frame_shape, min_side)
    ]


def _inside(box, tile):
    x, y, w, h = box
    return tile.x <= x and tile.y <= y and x + w <= tile.x + tile.side and y + h <= tile.y + tile.side


def test_neighbours_that_fit_in_one_window_share_it():
    boxes = [(40, 150, 80, 80), (200, 180, 90, 70), (300, 140, 60, 60)]  # union 320 wide, 110 high
    (tile,) = share_tiles(_planned(boxes), boxes, FRAME)
    assert tile.components == (0, 1, 2) and tile.side == 352
    assert all(_inside(box, tile) for box in boxes)
    assert 0 <= tile.x <= 640 - 352 and 0 <= tile.y <= 480 - 352  # still inside the frame


def test_instances_further_apart_than_a_window_keep_separate_tiles():
    boxes = [(0, 200, 60, 60), (400, 200, 60, 60)]  # union 460 wide > 352
    tiles = share_tiles(_planned(boxes), boxes, FRAME)
    assert [tile.components for tile in tiles] == [(0,), (1,)]
    assert all(_inside(box, tile) for box, tile in zip(boxes, tiles))


def test_large_instances_and_rows_of_tiles_are_left_as_planned():
    frame = (1000, 1200)
    boxes = [(100, 100, 500, 420), (0, 700, 1200, 250), (700, 100, 50, 50), (800, 150, 60, 60)]
    planned = _planned(boxes, parts=[5, 30, 1, 1], frame_shape=frame)
    shared = share_tiles(planned, boxes, frame)
    untouched = [tile for tile in planned if tile.components in {(0,), (1,)}]
    assert untouched and all(tile in shared for tile in untouched)
    (small,) = [tile for tile in shared if len(tile.components) > 1]
    assert small.components == (2, 3) and small.side == 352
    # the small ones are not folded into the big one's larger window: that would shrink them
    assert not any(2 in tile.components for tile in untouched)


def test_every_instance_is_covered_once_and_whole_and_never_more_tiles():
    rng = np.random.default_rng(0)
    for _ in range(200):
        count = int(rng.integers(1, 12))
        sizes = rng.integers(10, 200, size=(count, 2))
        boxes = [(int(rng.integers(0, 640 - w)), int(rng.integers(0, 480 - h)), int(w), int(h)) for w, h in sizes]
        planned = _planned(boxes)
        shared = share_tiles(planned, boxes, FRAME)
        assert len(shared) <= len(planned)
        covering = {index: [tile for tile in shared if index in tile.components] for index in range(count)}
        for index, tiles in covering.items():
            assert len(tiles) == 1 and _inside(boxes[index], tiles[0]) and tiles[0].side == 352
        assert all(len(set(t.components)) == len(t.components) for t in shared)


def test_a_frame_smaller_than_the_window_gets_one_tile():
    frame = (200, 300)
    boxes = [(0, 0, 50, 50), (250, 150, 50, 50), (120, 80, 30, 30)]
    (tile,) = share_tiles(_planned(boxes, frame_shape=frame), boxes, frame)
    assert tile.components == (0, 1, 2) and all(_inside(box, tile) for box in boxes)


def test_no_instances_no_tiles():
    assert share_tiles([], [], FRAME) == []


def test_the_seeds_rule_is_the_default_and_shared_is_selectable():
    assert ModelSettings().tiles == "instance"
    assert ModelSettings(tiles="shared").tiles == "shared"
    with pytest.raises(ValueError):
        ModelSettings(tiles="packed")
