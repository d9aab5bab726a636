"""One bench worker process: `linewatch-worker serve` with an emulated Inspector.

    python -m worker.bench.scale.worker --service-ms 250     # settings from LINEWATCH_* as for `serve`

The emulated Inspector sleeps a fixed time per batch and returns an empty anomaly map for every
frame: no model runs, so many workers fit on a small machine and the figures are the pipeline's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import numpy as np

from common.schemas import Versions
from worker.inspection.types import Frame, Inspection


class FixedTimeInspector:
    """Sleeps `service_s` per batch (as a GPU would be busy) and scores every frame 0."""

    def __init__(self, service_s: float):
        self.service_s = service_s
        self.versions = Versions(
            model_fingerprint="bench-fixed-time", profile="bench", prompt_set="none", threshold_version="bench"
        )

    def inspect(self, frames: Sequence[Frame]) -> list[Inspection]:
        time.sleep(self.service_s)
        return [
            Inspection(
                frame_id=frame.frame_id,
                score=0.0,
                anomaly_map=np.zeros(frame.image.shape[:2], np.float32),
                foreground=np.zeros(frame.image.shape[:2], bool),
            )
            for frame in frames
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.scale.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-ms", type=float, required=True, help="emulated inference time per batch")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from common.settings import LinewatchSettings
    from worker.stream.service import run_service

    run_service(LinewatchSettings(), FixedTimeInspector(args.service_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
