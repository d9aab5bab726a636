"""Stage 1: foreground extraction (pure functions over arrays).

SAM proposes instance masks; IS-Net says what is salient. A SAM mask is kept when
at least `min_coverage` of it lies inside the salient mask, which drops shadows
and background that SAM segments as separate masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from worker.inspection.pipeline.instances import object_labels, split_touching

ForegroundSource = Literal["sam+isnet", "isnet", "whole-frame"]
#: objects: SAM whole-object masks, or IS-Net blobs split at their necks; components: the paper's connected components.
InstanceRule = Literal["objects", "components"]


@dataclass(frozen=True)
class Foreground:
    """mask: (H, W) bool union of kept parts; parts: the kept SAM masks (empty without SAM)."""

    mask: np.ndarray
    parts: list[np.ndarray]
    source: ForegroundSource


@dataclass(frozen=True)
class Component:
    """A connected foreground component: label in the label image, box (x, y, w, h), area, SAM parts inside."""

    label: int
    box: tuple[int, int, int, int]
    area: int
    parts: int


def keep_salient_masks(sam_masks: list[np.ndarray], salient: np.ndarray, min_coverage: float = 0.8) -> list[np.ndarray]:
    """SAM masks (each (H, W) bool) of which at least `min_coverage` lies inside `salient` ((H, W) bool)."""
    kept = []
    for mask in sam_masks:
        area = int(mask.sum())
        if area and (mask & salient).sum() >= min_coverage * area:
            kept.append(mask)
    return kept


def select_foreground(
    shape: tuple[int, int],
    salient: np.ndarray | None,
    sam_masks: list[np.ndarray] | None,
    min_coverage: float = 0.8,
    salient_threshold: float = 0.5,
) -> Foreground:
    """Combine SAM proposals and the IS-Net map ((H, W) float in [0, 1]) into the foreground.

    Falls back, in order: SAM masks kept by IS-Net -> IS-Net alone (no SAM mask
    survived, or SAM is off) -> the whole frame (nothing salient, or no foreground
    model), so every frame is always inspected.
    """
    if salient is not None:
        salient_mask = salient >= salient_threshold
        if sam_masks:
            kept = keep_salient_masks(sam_masks, salient_mask, min_coverage)
            if kept:
                return Foreground(np.logical_or.reduce(kept), kept, "sam+isnet")
        if salient_mask.any():
            return Foreground(salient_mask, [], "isnet")
    return Foreground(np.ones(shape, dtype=bool), [], "whole-frame")


def instance_labels(foreground: Foreground, rule: InstanceRule = "components", min_area: int = 1) -> np.ndarray:
    """(H, W) int32 label image of the instances (0 = background) under `rule`."""
    if rule == "objects" and foreground.parts:
        return object_labels(foreground.mask.shape, foreground.parts)
    if rule == "objects" and foreground.source == "isnet":
        return split_touching(foreground.mask, min_area=min_area)
    _, labels = cv2.connectedComponents(foreground.mask.astype(np.uint8), connectivity=8)
    return labels.astype(np.int32)


def find_components(
    foreground: Foreground, min_area_fraction: float = 0.001, rule: InstanceRule = "components"
) -> tuple[np.ndarray, list[Component]]:
    """The instances of the foreground (see `instance_labels`), ignoring specks below `min_area_fraction` of the frame.

    Returns the (H, W) int32 label image and the components. A SAM part counts
    towards the component that holds most of its pixels.
    """
    min_area = max(1, int(min_area_fraction * foreground.mask.size))
    labels = instance_labels(foreground, rule, min_area)
    count = int(labels.max()) + 1
    parts_per_label = np.zeros(count, dtype=int)
    for part in foreground.parts:
        owners = labels[part]
        owners = owners[owners > 0]
        if owners.size:
            parts_per_label[np.bincount(owners).argmax()] += 1
    areas = np.bincount(labels.ravel(), minlength=count)
    components = []
    for label in range(1, count):
        if areas[label] < min_area:
            continue
        x, y, w, h = cv2.boundingRect((labels == label).astype(np.uint8))
        components.append(Component(label, (x, y, w, h), int(areas[label]), int(parts_per_label[label])))
    if not components:  # only specks: inspect the frame as one piece rather than not at all
        height, width = foreground.mask.shape
        labels = np.ones((height, width), dtype=np.int32)
        components = [Component(1, (0, 0, width, height), height * width, 0)]
    return labels, components
