"""Build a reference bank with an Inspector: the good frames' tiles through the same CLIP pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worker.inspection.fewshot.bank import PatchBank, build_bank
from worker.inspection.types import Frame

BATCH = 8


def reference_features(
    inspector, images: Sequence[np.ndarray], object_name: str, progress: Any = None
) -> list[np.ndarray]:
    """Per image, the (L, n, C) patch features of its tiles (foreground and tiling as when inspected).

    progress: an object with update(n) (a tqdm bar), advanced once per image."""
    features: list[np.ndarray] = []
    for start in range(0, len(images), BATCH):
        frames = [
            Frame(f"ref-{start + i}", image, object_name) for i, image in enumerate(images[start : start + BATCH])
        ]
        features += inspector.patch_features(frames)
        if progress is not None:
            progress.update(len(frames))
    return features


def bank_from_images(
    inspector,
    images: Sequence[np.ndarray],
    object_name: str,
    base: PatchBank | None = None,
    progress: Any = None,
) -> PatchBank:
    """A bank of `images` (added to `base`, the bank in force, when given), capped at
    `models.reference_max_patches` patches by greedy coreset subsampling."""
    settings = inspector.settings
    features = reference_features(inspector, images, object_name, progress)
    layers = inspector.models.clip.patch_layers(settings.few_shot_layers)
    if base is not None:
        if base.features.shape[0] != len(layers) or base.features.shape[2] != features[0].shape[2]:
            raise ValueError(f"the bank in force has shape {base.features.shape}, not this model's layers")
        features = [base.features, *features]
    bank = build_bank(features, layers, settings.reference_max_patches)
    frames = len(images) + (base.frames if base is not None else 0)
    return PatchBank(bank.features, frames=frames, layers=bank.layers)
