"""Reference banks: the patch features of good frames, per CLIP layer, capped by a greedy coreset.

A bank is one float32 array (L, P, C): L intermediate layers, P patches, C channels, every row a
unit vector, so a cosine similarity is a dot product. The same P patches are kept in every layer
(the coreset is chosen on the layers side by side), which keeps the bank one array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)  # identity-hashed: its device copy is cached by bank
class PatchBank:
    """features: (L, P, C) float32 unit rows; frames: how many reference frames it came from."""

    features: np.ndarray
    frames: int
    layers: tuple[int, ...]

    @property
    def patches(self) -> int:
        return int(self.features.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)


def greedy_coreset(features: torch.Tensor, size: int, seed: int = 0, projection_dim: int = 128) -> torch.Tensor:
    """Indices of `size` rows of (P, D) `features` chosen by greedy k-center (PatchCore).

    Each step takes the row farthest from everything chosen so far, so the kept rows cover the
    feature space and a rare normal pattern survives. Distances are measured after a fixed random
    projection to `projection_dim` (as PatchCore does) to keep the cost at O(P * size * dim).
    """
    count = features.shape[0]
    if size >= count:
        return torch.arange(count, device=features.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if features.shape[1] > projection_dim:
        projection = torch.randn(features.shape[1], projection_dim, generator=generator).to(features)
        features = features @ projection
    chosen = torch.empty(size, dtype=torch.long, device=features.device)
    chosen[0] = int(torch.randint(count, (1,), generator=generator))
    nearest = torch.cdist(features, features[chosen[0]].unsqueeze(0)).squeeze(1)
    for step in range(1, size):
        chosen[step] = torch.argmax(nearest)
        distance = torch.cdist(features, features[chosen[step]].unsqueeze(0)).squeeze(1)
        nearest = torch.minimum(nearest, distance)
    return chosen


def build_bank(
    frame_features: Sequence[np.ndarray], layers: tuple[int, ...], max_patches: int, seed: int = 0
) -> PatchBank:
    """A bank from per-frame patch features, each (L, n_i, C); coreset-subsampled beyond `max_patches`."""
    if not frame_features:
        raise ValueError("a reference bank needs at least one frame")
    stacked = torch.from_numpy(np.concatenate([np.asarray(f, dtype=np.float32) for f in frame_features], axis=1))
    stacked = F.normalize(stacked, dim=-1)
    if stacked.shape[1] > max_patches:
        side_by_side = stacked.permute(1, 0, 2).reshape(stacked.shape[1], -1)
        stacked = stacked[:, greedy_coreset(side_by_side, max_patches, seed)]
    return PatchBank(stacked.contiguous().numpy(), frames=len(frame_features), layers=tuple(layers))
