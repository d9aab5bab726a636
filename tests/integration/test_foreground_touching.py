"""Touching parts on the synthetic belt, through the real IS-Net: one instance (one tile) each.

Needs ``models/isnet/isnet.onnx`` (``make models``; fails, never skips, without it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from producer.sources.synthetic import PART_COLOURS, Part, add_noise, belt_background, belt_texture, draw_part
from worker.inspection.models.isnet import load_isnet
from worker.inspection.pipeline.foreground import find_components, select_foreground

MODEL_PATH = Path(__file__).resolve().parents[2] / "models" / "isnet" / "isnet.onnx"
HEIGHT, WIDTH = 480, 640


@pytest.fixture(scope="module")
def isnet():
    if not MODEL_PATH.is_file():
        pytest.fail(f"{MODEL_PATH} is missing; run `make models`")
    return load_isnet(MODEL_PATH)


def _touching_row(count: int, radius: float, pitch: float, seed: int) -> np.ndarray:
    """`count` solid caps in a row on the belt, centres `pitch` radii apart (< 2: they overlap)."""
    background = belt_background(belt_texture(WIDTH, HEIGHT, seed), WIDTH, HEIGHT)
    canvas = background.copy()
    for i in range(count):
        colour = PART_COLOURS[(seed + i) % len(PART_COLOURS)]
        draw_part(canvas, background, Part(120 + i * pitch * radius, 240, radius, colour, 0.0, 0.3 * i))
    return add_noise(canvas, np.random.default_rng(seed), 2.0)


@pytest.mark.parametrize(("count", "radius", "pitch"), [(2, 60, 1.9), (3, 45, 1.8), (4, 45, 1.95)])
def test_touching_parts_get_one_instance_each_where_the_seed_saw_one_blob(isnet, count, radius, pitch):
    image = _touching_row(count, radius, pitch, seed=count)
    foreground = select_foreground(image.shape[:2], isnet.predict([image])[0], None)
    assert foreground.source == "isnet"
    assert len(find_components(foreground, rule="components")[1]) == 1
    _, instances = find_components(foreground, rule="objects")
    assert len(instances) == count
    widths = [component.box[2] for component in instances]
    assert max(widths) < 2.3 * radius  # each box holds one part, not two
