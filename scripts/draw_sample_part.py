"""Draw the sample image the README inspects: docs/images/sample-part.jpg.

One 640x480 frame of the synthetic belt (grey metal washers, one with a drawn defect), from the same
scene generator as `linewatch-producer --source synthetic`, so it is the project's own drawing and free
to redistribute with it. Deterministic: the same seed gives the same pixels.

    python scripts/draw_sample_part.py [--out docs/images/sample-part.jpg] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from producer.sources.synthetic import SyntheticSource  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "sample-part.jpg")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    source = SyntheticSource(seed=args.seed, defect_rate=1.0, parts="washers", noise=1.0, limit=40)
    frame = next(frame for frame in source if frame.index >= 20 and frame.defective)
    Image.fromarray(frame.rgb).save(args.out, quality=92)
    print(f"wrote {args.out} ({frame.rgb.shape[1]}x{frame.rgb.shape[0]}, frame {frame.index}, drawn defect)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
