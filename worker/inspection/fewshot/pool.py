"""The rolling normal pool (label-free, MuSc's idea).

The pool holds the patch features of the last M frames of a scope, whatever their verdict. A
new frame's patch is compared with each pool frame on its own: its distance to that frame's
nearest patch. A defect seen in a minority of pool frames is close to those few and far from
the rest, so averaging only the smaller part of the per-frame distances (`fraction` of them)
keeps normal texture low while a defect, far from most frames, still stands out.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import torch


def pool_distance(queries: torch.Tensor, pool: Sequence[torch.Tensor], fraction: float) -> torch.Tensor:
    """queries (L, Q, C); pool: frames of (L, n_j, C); unit rows -> (Q,) robust patch distance.

    One matrix product against all pool patches at once; the per-frame maximum is a segment
    reduction (scatter_reduce) over the frame index of each pool patch.
    """
    if not pool:
        raise ValueError("the pool is empty")
    patches = torch.cat(list(pool), dim=1)  # (L, N, C)
    owner = torch.cat([torch.full((p.shape[1],), j, device=queries.device) for j, p in enumerate(pool)])
    similarity = torch.bmm(queries, patches.transpose(1, 2))  # (L, Q, N)
    best = torch.full((*queries.shape[:2], len(pool)), -1.0, device=queries.device, dtype=queries.dtype)
    best = best.scatter_reduce(2, owner.expand_as(similarity), similarity, reduce="amax", include_self=True)
    per_frame = (1.0 - best).mean(dim=0)  # (Q, J): the layers averaged, as for a bank
    keep = max(1, math.ceil(fraction * len(pool)))
    return per_frame.sort(dim=1).values[:, :keep].mean(dim=1)


class RollingPool:
    """The last `size` frames' patch features (L, n, C) of one scope, in memory; oldest dropped."""

    def __init__(self, size: int, on_add: Callable[[np.ndarray], None] | None = None) -> None:
        self.size = size
        self.on_add = on_add  # e.g. push the frame to the shared ring in Redis
        self._frames: deque[np.ndarray] = deque(maxlen=size)

    def add(self, features: np.ndarray) -> None:
        features = np.ascontiguousarray(features, dtype=np.float32)
        self._frames.append(features)
        if self.on_add is not None:
            self.on_add(features)

    def replace(self, frames: Sequence[np.ndarray]) -> None:
        """Take the pool read back from Redis (shared by every worker), newest last."""
        self._frames = deque((np.asarray(f, dtype=np.float32) for f in frames[-self.size :]), maxlen=self.size)

    def frames(self) -> list[np.ndarray]:
        return list(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return sum(frame.nbytes for frame in self._frames)
