"""Few-shot math: distance of each patch to its nearest reference patch, tile maps, fusion.

All distances are 1 - cosine similarity of unit vectors, computed as batched matrix products on
the worker's device and averaged over the CLIP layers (WinCLIP+ / APRIL-GAN use several layers).
"""

from __future__ import annotations

import numpy as np
import torch

BANK_CHUNK = 16384  # bank rows per matmul: bounds the (patches x bank) similarity block


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """queries (L, Q, C), bank (L, P, C), unit rows -> (Q,) mean over layers of 1 - max cosine."""
    best = torch.full(queries.shape[:2], -1.0, device=queries.device, dtype=queries.dtype)
    for start in range(0, bank.shape[1], BANK_CHUNK):
        chunk = bank[:, start : start + BANK_CHUNK]
        best = torch.maximum(best, torch.bmm(queries, chunk.transpose(1, 2)).amax(dim=2))
    return (1.0 - best).mean(dim=0)


def tile_distance_maps(distances: np.ndarray, tiles: int, grid: int) -> np.ndarray:
    """(tiles * grid * grid,) patch distances -> (tiles, grid, grid) maps clipped to [0, 1]."""
    return np.clip(distances.reshape(tiles, grid, grid), 0.0, 1.0).astype(np.float32)


def fuse(zero_shot: np.ndarray | float, few_shot: np.ndarray | float, weight: float):
    """WinCLIP+ fusion: (1 - weight) * zero-shot + weight * few-shot (maps or scores alike)."""
    return (1.0 - weight) * zero_shot + weight * few_shot
