"""Stage 3 and 4 math: tile scores from CLIP similarities, pixel maps from CLIPSeg prompts."""

from __future__ import annotations

import numpy as np


def tile_anomaly_scores(
    tile_embeddings: np.ndarray, normal_prompts: np.ndarray, anomalous_prompts: np.ndarray, temperature: float
) -> np.ndarray:
    """P(anomalous) per tile.

    tile_embeddings: (T, D); normal_prompts: (Pn, D); anomalous_prompts: (Pa, D); all unit vectors.
    The cosine similarity to each prompt is averaged per class (the paper averages
    similarities, not embeddings: anomalous prompts are too spread out for a mean
    embedding to mean much), then a two-way softmax scaled by `temperature` (CLIP's own
    logit scale, 100, by default; anomalib's WinCLIP uses 1/0.07): the larger, the closer
    scores get to 0 or 1.
    Returns (T,) in [0, 1].
    """
    normal = (tile_embeddings @ normal_prompts.T).mean(axis=1)
    anomalous = (tile_embeddings @ anomalous_prompts.T).mean(axis=1)
    logits = temperature * np.stack([normal, anomalous], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return (probabilities[:, 1] / probabilities.sum(axis=1)).astype(np.float32)


def harmonic_mean(maps: np.ndarray, axis: int = 1, eps: float = 1e-6) -> np.ndarray:
    """Harmonic mean over `axis` of maps in (0, 1]: high only where every prompt agrees.

    maps: e.g. (T, P, h, w) CLIPSeg probabilities -> (T, h, w).
    """
    clipped = np.clip(maps, eps, None)
    return (maps.shape[axis] / (1.0 / clipped).sum(axis=axis)).astype(np.float32)
