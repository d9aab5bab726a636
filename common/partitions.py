"""Which partition a camera's frames land in, and how evenly a fleet of cameras spreads.

Frames are keyed by camera id, and Kafka's default partitioner (murmur2 of the key, modulo the
partition count; the same in the Java client and kafka-python) sends every frame of a camera to
one partition. A worker owns whole partitions, so a partition that draws three busy cameras is
a worker with three cameras' load while another idles:

    python -m common.partitions --partitions 16 cam-{1..40}
    python -m common.partitions --partitions 16 --fps cam-1=10 --fps cam-2=25 cam-{1..40}
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka.partitioner.default import murmur2


def partition_of(camera_id: str, partitions: int) -> int:
    """The partition the producer sends this camera's frames to (`partitions` partitions)."""
    return (murmur2(camera_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Spread:
    """Cameras (and their frame rates) per partition."""

    partitions: int
    cameras: dict[int, list[str]]
    load: dict[int, float]

    @property
    def busiest(self) -> float:
        return max(self.load.values(), default=0.0)

    @property
    def even(self) -> float:
        """Each partition's load if the cameras spread perfectly."""
        return sum(self.load.values()) / self.partitions

    @property
    def empty(self) -> int:
        return sum(1 for p in range(self.partitions) if not self.cameras.get(p))

    def workers_needed(self, worker_fps: float) -> int:
        """Workers for the busiest partition to keep up, if partitions were dealt out evenly."""
        return max(1, min(self.partitions, math.ceil(sum(self.load.values()) / worker_fps)))


def spread(camera_ids: Iterable[str], partitions: int, fps: Mapping[str, float] | None = None) -> Spread:
    fps = fps or {}
    cameras: dict[int, list[str]] = {p: [] for p in range(partitions)}
    load: dict[int, float] = {p: 0.0 for p in range(partitions)}
    for camera in camera_ids:
        p = partition_of(camera, partitions)
        cameras[p].append(camera)
        load[p] += fps.get(camera, 1.0)
    return Spread(partitions, cameras, load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.partitions", description=__doc__.split("\n\n")[0])
    parser.add_argument("cameras", nargs="+", help="camera ids, as the producers send them")
    parser.add_argument("--partitions", type=int, required=True, help="partitions of the frames topic")
    parser.add_argument("--fps", action="append", default=[], metavar="CAMERA=FPS", help="a camera's rate (default 1)")
    args = parser.parse_args(argv)
    rates = {name: float(rate) for name, _, rate in (pair.partition("=") for pair in args.fps)}
    result = spread(args.cameras, args.partitions, rates)
    for p in range(args.partitions):
        print(f"partition {p:>3}: {result.load[p]:6.1f} fps  {' '.join(result.cameras[p]) or '-'}")
    print(
        f"busiest partition {result.busiest:.1f} fps vs {result.even:.1f} if even "
        f"({result.busiest / result.even:.2f}x); {result.empty} partition(s) without a camera"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
