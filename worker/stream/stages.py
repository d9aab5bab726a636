"""What every stage of the stream worker shares: one typed context instead of loose keyword parts."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from kafka import TopicPartition
from opentelemetry.trace import Span

from common.settings import LinewatchSettings
from worker.inspection.types import Inspection
from worker.stream.batching import InFlight
from worker.stream.intake import Consumed, DeadLetter, Skipped, Work
from worker.stream.judging import Judge
from worker.stream.offsets import Checkpoint
from worker.stream.telemetry import Counters, ServiceTelemetry


@dataclass(frozen=True)
class StageContext:
    settings: LinewatchSettings
    checkpoint: Checkpoint  # its `generation` tells which polled work still counts
    in_flight: InFlight
    telemetry: ServiceTelemetry
    counters: Counters
    judge: Judge | None = None  # the control records in force (None: the static thresholds)
    abandon: threading.Event = field(default_factory=threading.Event)  # shutdown gave up: send nothing more

    def current(self, generation: int) -> bool:
        """Work polled in `generation` still counts (no rewind since)."""
        return generation == self.checkpoint.generation

    def kept(self, epochs: Mapping[TopicPartition, int], partition: TopicPartition) -> bool:
        """Work of `partition` polled at `epochs` still counts (the partition was not revoked since)."""
        return epochs.get(partition, 0) == self.checkpoint.epoch(partition)


@dataclass(frozen=True)
class Inspected:
    work: Work
    inspection: Inspection

    @property
    def message(self) -> Consumed:
        return self.work.message

    @property
    def partition(self) -> TopicPartition:
        return self.work.partition

    @property
    def span(self) -> Span:
        return self.work.span


Output = Inspected | DeadLetter | Skipped  # what the publish thread sends for one consumed message


@dataclass(frozen=True)
class Scored:
    """A batch after the inference thread: one output per message, in offset order."""

    generation: int
    size: int  # messages of the batch (counted in flight)
    outputs: list[Output]  # in offset order; none for the messages of partitions revoked meanwhile
    epochs: Mapping[TopicPartition, int] = field(default_factory=dict)  # the partitions' when polled
    failed: bool = False  # the inference thread failed on the batch: read it again
