"""Which partition a camera's frames land in, and how evenly a fleet of cameras spreads.

Frames are keyed by camera id, and Kafka's default partitioner (murmur2 of the key, modulo the
partition count; the same in the Java client and kafka-python) sends every frame of a camera to
one partition. A worker owns whole partitions, so a partition that draws three busy cameras is
a worker with three cameras' load while another idles:

    python -m common.partitions --partitions 16 cam-{1..40}
    python -m common.partitions --partitions 16 --fps cam-1=10 --fps cam-2=25 cam-{1..40}

The cure is a table, `kafka.camera_partitions` ({camera id: partition}), that producers follow
for the cameras it lists (`assign` deals them out evenly); cameras not in it keep murmur2. This
module is the one place for that rule: the producer's partitioner and the command above both use it.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka.partitioner import DefaultPartitioner, Partitioner
from kafka.partitioner.default import murmur2


def partition_of(camera_id: str, partitions: int, table: Mapping[str, int] | None = None) -> int:
    """The partition the producer sends this camera's frames to (`partitions` partitions): the
    table's entry if it has one, else murmur2 of the id as Kafka's default partitioner does."""
    if table and camera_id in table:
        if table[camera_id] >= partitions:
            raise ValueError(
                f"kafka.camera_partitions puts camera {camera_id!r} on partition {table[camera_id]} of {partitions}"
            )
        return table[camera_id]
    return (murmur2(camera_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


class CameraPartitioner(Partitioner):
    """kafka-python partitioner for frames keyed by camera id: a camera in `table` goes to its
    partition, any other key where kafka-python's DefaultPartitioner sends it (murmur2)."""

    def __init__(self, table: Mapping[str, int]):
        self.table = {camera.encode("utf-8"): partition for camera, partition in table.items()}
        self.default = DefaultPartitioner()

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partition = self.table.get(serialized_key) if serialized_key is not None else None
        if partition is None:
            return self.default.partition(topic, key, serialized_key, value, serialized_value, cluster)
        known = cluster.partitions_for_topic(topic) or set()
        if partition not in known:
            camera = serialized_key.decode("utf-8", "replace")
            raise ValueError(
                f"kafka.camera_partitions puts camera {camera!r} on partition {partition}, "
                f"but topic {topic!r} has {len(known)} partitions"
            )
        return partition


def assign(
    cameras: Iterable[str],
    partitions: int,
    fps: Mapping[str, float] | None = None,
    keep: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """An even camera -> partition table: the entries of `keep` stay where they are (moving a camera
    reorders its frames once), and each other camera goes to the least loaded partition, the
    fastest first (frame rates from `fps`, default 1)."""
    fps = fps or {}
    table = {camera: p for camera, p in (keep or {}).items() if p < partitions}
    load = [0.0] * partitions
    for camera, p in table.items():
        load[p] += fps.get(camera, 1.0)
    new = [camera for camera in dict.fromkeys(cameras) if camera not in table]
    for camera in sorted(new, key=lambda c: -fps.get(c, 1.0)):
        p = min(range(partitions), key=lambda i: load[i])
        table[camera] = p
        load[p] += fps.get(camera, 1.0)
    return table


def expand(names: Iterable[str]) -> list[str]:
    """Camera ids from arguments: `cam-1..cam-40` (or `cam-1..40`) is a range; commas separate ids."""
    cameras: list[str] = []
    for name in (part for text in names for part in text.split(",") if part):
        match = re.fullmatch(r"(.*?)(\d+)\.\.(?:\1)?(\d+)", name)
        if match is None:
            cameras.append(name)
            continue
        prefix, first, last = match.group(1), int(match.group(2)), int(match.group(3))
        cameras += [f"{prefix}{i}" for i in range(first, last + 1)]
    return cameras


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


def spread(
    camera_ids: Iterable[str],
    partitions: int,
    fps: Mapping[str, float] | None = None,
    table: Mapping[str, int] | None = None,
) -> Spread:
    fps = fps or {}
    cameras: dict[int, list[str]] = {p: [] for p in range(partitions)}
    load: dict[int, float] = {p: 0.0 for p in range(partitions)}
    for camera in camera_ids:
        p = partition_of(camera, partitions, table)
        cameras[p].append(camera)
        load[p] += fps.get(camera, 1.0)
    return Spread(partitions, cameras, load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.partitions", description=__doc__.split("\n\n")[0])
    parser.add_argument("cameras", nargs="+", help="camera ids, as the producers send them")
    parser.add_argument("--partitions", type=int, required=True, help="partitions of the frames topic")
    parser.add_argument("--fps", action="append", default=[], metavar="CAMERA=FPS", help="a camera's rate (default 1)")
    parser.add_argument(
        "--murmur2", action="store_true", help="ignore kafka.camera_partitions: where the ids alone put the cameras"
    )
    args = parser.parse_args(argv)
    rates = {name: float(rate) for name, _, rate in (pair.partition("=") for pair in args.fps)}
    cameras = expand(args.cameras)
    table: Mapping[str, int] = {}
    if not args.murmur2:
        from common.settings import LinewatchSettings

        table = LinewatchSettings().kafka.camera_partitions
    try:
        result = spread(cameras, args.partitions, rates, table)
    except ValueError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    for p in range(args.partitions):
        print(f"partition {p:>3}: {result.load[p]:6.1f} fps  {' '.join(result.cameras[p]) or '-'}")
    print(
        f"busiest partition {result.busiest:.1f} fps vs {result.even:.1f} if even "
        f"({result.busiest / result.even:.2f}x); {result.empty} partition(s) without a camera"
    )
    placed = sum(1 for camera in cameras if camera in table)
    print(f"{placed} of {len(cameras)} camera(s) placed by kafka.camera_partitions, the others by murmur2 of their id")
    return 0


if __name__ == "__main__":
    sys.exit(main())
