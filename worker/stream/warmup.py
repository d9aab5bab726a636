"""One inspection of a synthetic frame before the worker joins its consumer group.

The first pass through the models pays for lazy work (CUDA context and kernel selection,
allocator growth, the prompt embeddings of a first object). A worker that subscribed before it
would take partitions and then hold their frames through that pass; warming up first keeps a
joining worker from stalling the partitions it is handed, and the startup probe covers it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from worker.inspection.types import Frame, InspectorProtocol

log = logging.getLogger(__name__)

WARM_UP_SIDE = 256  # pixels: big enough to run every stage, small enough to be quick


def warm_up(inspector: InspectorProtocol, passes: int, object_name: str = "object") -> float:
    """Inspect `passes` synthetic frames (a textured grey square); returns the seconds it took."""
    if passes <= 0:
        return 0.0
    rng = np.random.default_rng(0)
    image = (128 + rng.integers(-24, 24, size=(WARM_UP_SIDE, WARM_UP_SIDE, 3))).astype(np.uint8)
    started = time.monotonic()
    for index in range(passes):
        inspector.inspect([Frame(frame_id=f"warm-up-{index}", image=image, object_name=object_name)])
    elapsed = time.monotonic() - started
    log.info("models warm after %d synthetic pass(es) in %.2f s", passes, elapsed)
    return elapsed
