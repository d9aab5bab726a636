"""Touching instances stay apart: SAM whole-object masks, or IS-Net blobs split at their necks."""

import numpy as np
import pytest

from producer.sources.synthetic import Part, part_mask
from worker.inspection.pipeline.foreground import Foreground, find_components
from worker.inspection.pipeline.instances import object_labels, split_touching, whole_objects

SHAPE = (480, 640)


def _part(x: float, y: float, radius: float, hole: float = 0.0) -> np.ndarray:
    return part_mask(SHAPE, Part(x=x, y=y, radius=radius, colour=(200, 200, 200), hole=hole, angle=0.0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _best_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    return max(_iou(labels == label, truth) for label in range(1, labels.max() + 1))


@pytest.mark.parametrize("gap", [1.7, 1.85, 1.95])  # centre distance in radii: overlapping to just touching
def test_two_touching_parts_are_split_into_two_instances(gap):
    discs = [_part(250, 240, 50), _part(250 + gap * 50, 240, 50)]
    foreground = Foreground(discs[0] | discs[1], [], "isnet")
    labels, components = find_components(foreground, rule="objects")
    assert len(components) == 2
    assert all(_best_iou(labels, disc) >= 0.85 for disc in discs)
    _, seed_components = find_components(foreground, rule="components")
    assert len(seed_components) == 1  # the paper's rule: one blob, one tile


def test_touching_washers_are_split_and_keep_their_holes():
    washers = [_part(250, 240, 60, hole=0.45), _part(360, 240, 60, hole=0.45)]
    labels = split_touching(washers[0] | washers[1], min_area=300)
    assert labels.max() == 2
    assert all(_best_iou(labels, washer) >= 0.85 for washer in washers)
    assert labels[240, 250] == 0  # the hole stays background


def test_a_row_of_six_touching_parts_gives_six_instances():
    discs = [_part(80 + 90 * i, 240, 48) for i in range(6)]
    mask = np.logical_or.reduce(discs)
    labels = split_touching(mask, min_area=300)
    assert labels.max() == 6
    assert all(_best_iou(labels, disc) >= 0.85 for disc in discs)


@pytest.mark.parametrize(
    "mask",
    [
        _part(320, 240, 80, hole=0.5),  # a washer: its ring has no neck
        _part(320, 240, 80) | _part(395, 240, 18),  # a bump too small to be a part of its own
        _part(320, 240, 60) | _part(320 + 60, 240, 60) & (np.arange(640)[None, :] < 330),  # one convex blob
    ],
)
def test_single_objects_are_not_cut(mask):
    assert split_touching(mask, min_area=300).max() == 1


def test_sam_whole_object_masks_are_instances_and_their_inner_masks_their_parts():
    left, right = _part(250, 240, 60), _part(345, 240, 60)  # overlapping whole objects
    inner = [_part(240, 240, 15), _part(270, 225, 10), _part(350, 250, 12)]
    parts = [left, right, *inner]
    assert sorted(whole_objects(parts)) == [0, 1]
    foreground = Foreground(np.logical_or.reduce(parts), parts, "sam+isnet")
    labels, components = find_components(foreground, rule="objects")
    assert len(components) == 2
    assert sorted(component.parts for component in components) == [2, 3]
    assert (labels > 0).sum() == foreground.mask.sum()  # every foreground pixel belongs to an instance
    _, seed_components = find_components(foreground, rule="components")
    assert [component.parts for component in seed_components] == [5]


def test_object_labels_give_overlap_to_the_smaller_object():
    big, small = _part(300, 240, 80), _part(370, 240, 30)
    labels = object_labels(SHAPE, [big, small])
    assert (labels == 2).sum() == small.sum()
