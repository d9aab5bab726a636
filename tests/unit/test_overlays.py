"""The heat overlay: the frame's own pixels where the map is low, heat rising with the score, the mask outlined."""

from __future__ import annotations

import numpy as np

from worker.inspection.overlays import ALPHA_AT_LEVEL, ALPHA_AT_ONE, heat_alpha, heat_level, overlay_heatmap


def _frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)  # every pixel its own colour


def test_pixels_at_or_below_the_level_keep_the_frame_bytes_and_the_rest_is_tinted():
    frame = _frame()
    heat = np.zeros((60, 80), np.float32)
    heat[:, 20:40] = 0.25  # exactly the default level: still the frame
    heat[:, 40:60] = 0.6
    heat[:, 60:] = 1.0
    drawn = overlay_heatmap(frame, heat)
    assert heat_level() == 0.25
    assert np.array_equal(drawn[:, :40], frame[:, :40])
    assert not np.array_equal(drawn[:, 40:], frame[:, 40:])
    # at 1.0 JET is dark red: the red channel moves towards it, the blue one away from the frame's
    red_shift = drawn[:, 60:].astype(int) - frame[:, 60:].astype(int)
    expected = np.rint(frame[:, 60:] * (1 - ALPHA_AT_ONE) + np.array([128, 0, 0]) * ALPHA_AT_ONE)
    assert np.abs(red_shift).mean() > 20 and np.abs(drawn[:, 60:].astype(int) - expected).max() <= 1
    assert drawn.dtype == np.uint8 and drawn is not frame and np.array_equal(frame, _frame())  # input untouched


def test_alpha_rises_with_the_score_from_the_level():
    alpha = heat_alpha(np.array([0.0, 0.3, 0.31, 0.65, 1.0], np.float32), level=0.3)
    assert alpha[0] == alpha[1] == 0.0
    assert ALPHA_AT_LEVEL <= alpha[2] < alpha[3] < alpha[4] and np.isclose(alpha[4], ALPHA_AT_ONE)
    assert heat_level(0.8) == 0.4 and heat_level(0.8, fraction=1.0) == 0.8


def test_the_mask_is_outlined_and_the_inside_of_the_outline_is_not_painted_over():
    frame = _frame()
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True
    drawn = overlay_heatmap(frame, None, mask, contour_rgb=(255, 0, 255), thickness=1)
    outline = np.all(drawn == (255, 0, 255), axis=-1)
    assert outline[20, 30:50].all() and outline[39, 30:50].all() and outline[20:40, 30].all()
    assert np.array_equal(drawn[25:35, 35:45], frame[25:35, 35:45])  # inside: the frame
    assert np.array_equal(drawn[:15], frame[:15])  # away from the mask: the frame


def test_a_small_map_is_stretched_to_the_frame():
    frame = _frame()
    heat = np.zeros((6, 8), np.float32)
    heat[:, 4:] = 1.0
    drawn = overlay_heatmap(frame, heat, level=0.5)
    assert np.array_equal(drawn[:, :30], frame[:, :30]) and not np.array_equal(drawn[:, 50:], frame[:, 50:])
