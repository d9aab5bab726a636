"""The paper's rules, pinned with hand-made inputs."""

import numpy as np
import pytest

from worker.inspection.pipeline.aggregate import component_scores, image_score, paste_tiles
from worker.inspection.pipeline.foreground import Foreground, find_components, keep_salient_masks, select_foreground
from worker.inspection.pipeline.scoring import harmonic_mean, tile_anomaly_scores
from worker.inspection.pipeline.tiling import Tile, crop_tile, plan_tiles


# -- tiling -----------------------------------------------------------------------------------
def test_square_tile_is_centred_and_at_least_model_input():
    tiles = plan_tiles(0, box=(500, 400, 100, 60), parts=3, frame_shape=(1000, 1200))
    assert tiles == [Tile((0,), 550 - 176, 430 - 176, 352)]


def test_large_component_gets_one_tile_of_its_longest_side():
    (tile,) = plan_tiles(0, box=(100, 100, 500, 420), parts=5, frame_shape=(1000, 1000))
    assert tile.side == 500 and (tile.x, tile.y) == (100, 60)


def test_aspect_three_with_many_parts_is_tiled_along_long_axis():
    # 1200 x 400 component, 25 SAM parts: squares of the short side, step 200 along x.
    tiles = plan_tiles(0, box=(0, 300, 1200, 400), parts=25, frame_shape=(1000, 1200), min_side=352)
    assert [t.side for t in tiles] == [400] * 5
    assert [t.x for t in tiles] == [0, 200, 400, 600, 800]
    assert {t.y for t in tiles} == {300}
    # every column of the object is inside some tile and the last tile reaches its end
    assert tiles[-1].x + tiles[-1].side == 1200


def test_vertical_elongated_object_is_tiled_along_y():
    tiles = plan_tiles(0, box=(100, 0, 200, 800), parts=30, frame_shape=(800, 600), min_side=100)
    assert len({t.x for t in tiles}) == 1 and len(tiles) == 7  # centres 100..700 step 100
    assert [t.y for t in tiles] == [0, 100, 200, 300, 400, 500, 600]


def test_elongated_but_few_parts_keeps_single_square():
    assert len(plan_tiles(0, box=(0, 300, 1200, 400), parts=20, frame_shape=(1000, 1200))) == 1


def test_crop_pads_outside_frame_with_zeros():
    image = np.full((100, 100, 3), 7, dtype=np.uint8)
    crop = crop_tile(image, Tile((0,), -10, 50, 80))
    assert crop.shape == (80, 80, 3)
    assert (crop[:, :10] == 0).all() and (crop[:50, 10:] == 7).all() and (crop[50:] == 0).all()


# -- scoring ------------------------------------------------------------------------------------
def test_harmonic_mean_of_one_and_half_is_two_thirds():
    maps = np.array([1.0, 0.5]).reshape(1, 2, 1, 1)
    assert harmonic_mean(maps)[0, 0, 0] == pytest.approx(2 / 3)


def test_harmonic_mean_is_low_when_one_prompt_disagrees():
    maps = np.array([0.9, 0.9, 0.01]).reshape(1, 3, 1, 1)
    assert harmonic_mean(maps)[0, 0, 0] < np.mean([0.9, 0.9, 0.01]) / 2


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_tile_score_averages_similarities_not_embeddings():
    tile = _unit([[1.0, 0.0, 0.0]])
    normal = _unit([[1.0, 1.0, 0.0]])
    anomalous = _unit([[1.0, 0.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    scale = 100.0
    expected_gap = (tile @ anomalous.T).mean() - (tile @ normal.T).mean()
    expected = 1.0 / (1.0 + np.exp(-scale * expected_gap))
    assert tile_anomaly_scores(tile, normal, anomalous, scale)[0] == pytest.approx(expected, rel=1e-5)
    # averaging the embeddings first would give a different answer here
    mean_embedding = _unit(anomalous.mean(axis=0))
    wrong_gap = float((tile @ mean_embedding)[0]) - float((tile @ normal.T).mean())
    assert not np.isclose(1.0 / (1.0 + np.exp(-scale * wrong_gap)), expected)


def test_tile_score_is_a_probability_and_orders_tiles():
    normal = _unit([[1.0, 0.0]])
    anomalous = _unit([[0.0, 1.0]])
    tiles = _unit([[1.0, 0.1], [0.1, 1.0]])
    scores = tile_anomaly_scores(tiles, normal, anomalous, 10.0)
    assert ((0 <= scores) & (scores <= 1)).all() and scores[0] < 0.5 < scores[1]


# -- aggregation ----------------------------------------------------------------------------------
def test_top_quarter_of_eight_components_averages_best_two():
    scores = np.array([0.1, 0.9, 0.2, 0.3, 0.7, 0.4, 0.5, 0.6])
    assert image_score(scores) == pytest.approx((0.9 + 0.7) / 2)


def test_top_quarter_keeps_at_least_one_component():
    assert image_score(np.array([0.2, 0.8, 0.5])) == pytest.approx(0.8)
    assert image_score(np.array([])) == 0.0


def test_component_score_is_mean_of_its_tiles():
    scores = component_scores(np.array([0.2, 0.4, 0.9]), [(0,), (0,), (1,)], 3)
    assert scores.tolist() == pytest.approx([0.3, 0.9, 0.0])


def test_a_shared_tile_counts_for_every_component_it_covers():
    scores = component_scores(np.array([0.2, 0.6]), [(0, 2), (0,)], 3)
    assert scores.tolist() == pytest.approx([0.4, 0.0, 0.2])


def test_paste_scales_by_tile_score_and_averages_overlaps():
    tiles = [Tile((0,), 0, 0, 4), Tile((0,), 2, 0, 4)]
    maps = np.stack([np.full((8, 8), 1.0), np.full((8, 8), 0.5)])  # model resolution differs from tile side
    out = paste_tiles((4, 6), tiles, maps, np.array([0.8, 0.4]))
    assert out[:, :2] == pytest.approx(np.full((4, 2), 0.8))
    assert out[:, 2:4] == pytest.approx(np.full((4, 2), (0.8 + 0.2) / 2))
    assert out[:, 4:] == pytest.approx(np.full((4, 2), 0.2))


def test_paste_leaves_uncovered_pixels_at_zero():
    out = paste_tiles((10, 10), [Tile((0,), 0, 0, 5)], np.ones((1, 5, 5)), np.array([1.0]))
    assert out[:5, :5].min() == 1.0 and out[5:, :].max() == 0.0


# -- foreground -------------------------------------------------------------------------------------
def _box_mask(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_sam_mask_kept_only_when_80_percent_inside_salient():
    salient = _box_mask((20, 20), 0, 10, 0, 20)
    inside = _box_mask((20, 20), 2, 10, 0, 10)  # 100% covered
    shadow = _box_mask((20, 20), 8, 18, 0, 10)  # 20% covered
    borderline = _box_mask((20, 20), 0, 10, 10, 20) | _box_mask((20, 20), 10, 12, 10, 15)  # 100/110 covered
    kept = keep_salient_masks([inside, shadow, borderline], salient)
    assert len(kept) == 2 and kept[0] is inside and kept[1] is borderline


def test_foreground_fallbacks():
    shape = (20, 20)
    salient = np.zeros(shape)
    salient[5:10, 5:10] = 0.9
    shadow = _box_mask(shape, 10, 20, 0, 20)
    fg = select_foreground(shape, salient, [shadow])
    assert fg.source == "isnet" and fg.mask.sum() == 25
    assert select_foreground(shape, np.zeros(shape), [shadow]).source == "whole-frame"
    assert select_foreground(shape, None, None).mask.all()


def test_components_count_parts_and_drop_specks():
    shape = (100, 100)
    left, right, speck = (
        _box_mask(shape, 10, 40, 10, 40),
        _box_mask(shape, 50, 90, 50, 90),
        _box_mask(shape, 0, 2, 98, 100),
    )
    parts = [_box_mask(shape, 10, 20, 10, 40), _box_mask(shape, 20, 40, 10, 40), right]
    _, components = find_components(Foreground(left | right | speck, parts, "sam+isnet"), min_area_fraction=0.001)
    assert [(c.box, c.parts) for c in components] == [((10, 10, 30, 30), 2), ((50, 50, 40, 40), 1)]
