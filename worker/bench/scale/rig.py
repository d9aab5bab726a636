"""The scale bench's moving parts: worker processes, paced cameras and a results collector.

Each bench phase gets its own topics (`Topics`), so no phase sees another's frames or offsets.
Camera `cam-NN` publishes to partition NN, one camera per partition: the bench measures the
group, not how camera ids hash (the sizing guide covers that).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from common.codecs import encode_image
from common.kafka import COMPACTED, build_consumer, build_producer, ensure_topics
from common.messages import frame_headers
from common.settings import KafkaSettings
from producer.publisher import build_frame_meta
from worker.bench.scale.stats import Arrival, owners

REPO = Path(__file__).resolve().parents[3]
FRAME_SIDE = 64  # pixels: small frames, so decoding costs little next to the emulated service time


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def frames(self) -> str:
        return f"{self.prefix}.frames"

    @property
    def results(self) -> str:
        return f"{self.prefix}.results"

    def env(self) -> dict[str, str]:
        return {
            "LINEWATCH_KAFKA__FRAMES_TOPIC": self.frames,
            "LINEWATCH_KAFKA__RESULTS_TOPIC": self.results,
            "LINEWATCH_KAFKA__DLQ_TOPIC": f"{self.prefix}.dlq",
            "LINEWATCH_KAFKA__CONTROL_TOPIC": f"{self.prefix}.control",
        }

    def create(self, kafka: KafkaSettings) -> None:
        control = f"{self.prefix}.control"
        ensure_topics(kafka, [self.frames, self.results, f"{self.prefix}.dlq", control], {control: COMPACTED})


@dataclass
class Fleet:
    """Worker processes of one consumer group, by name (the name is also the worker id and,
    with `static`, the group instance id: a restarted name comes back as the same member)."""

    bootstrap: str
    topics: Topics
    group: str
    assignor: str
    static: bool
    partitions: int
    service_ms: float
    batch: int
    session_timeout_ms: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def env(self, name: str) -> dict[str, str]:
        # Redis (the few-shot store opens it) from the bench's environment; every other setting is the bench's
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_") or k == "LINEWATCH_REDIS__URL"}
        env |= self.topics.env() | {
            "PYTHONPATH": str(REPO),
            "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "LINEWATCH_KAFKA__GROUP_ID": self.group,
            "LINEWATCH_KAFKA__ASSIGNOR": self.assignor,
            "LINEWATCH_KAFKA__PARTITIONS": str(self.partitions),
            "LINEWATCH_KAFKA__SESSION_TIMEOUT_MS": str(self.session_timeout_ms),
            "LINEWATCH_TELEMETRY__ENABLED": "false",
            "LINEWATCH_WORKER__WORKER_ID": name,
            "LINEWATCH_WORKER__BATCH_MAX_FRAMES": str(self.batch),
            "LINEWATCH_WORKER__HEATMAP_SIDE": "0",
            # a batch closes after about one service time: frames gather while the previous batch runs
            "LINEWATCH_WORKER__BATCH_MAX_WAIT_MS": str(int(self.service_ms)),
            "LINEWATCH_WORKER__SHUTDOWN_TIMEOUT_S": "5",
        }
        if self.static:
            env["LINEWATCH_KAFKA__GROUP_INSTANCE_ID"] = f"{self.group}-{name}"
        return env

    def start(self, *names: str) -> None:
        for name in names:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "worker.bench.scale.worker", "--service-ms", str(self.service_ms)],
                cwd=REPO,
                env=self.env(name),
                stdin=subprocess.DEVNULL,
            )

    def terminate(self, name: str, timeout_s: float = 20.0) -> None:
        """SIGTERM: the worker finishes its frames, commits and leaves the group."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self, name: str) -> None:
        """SIGKILL: a crash; the group notices when the session times out."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def close(self) -> None:
        """SIGTERM every worker at once (a second signal would skip the clean stop), then wait."""
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


class Collector:
    """Reads a results topic from its start (no group) and keeps an `Arrival` per result."""

    def __init__(self, kafka: KafkaSettings, topic: str, partitions: int):
        from kafka import TopicPartition

        self.consumer = build_consumer(kafka, group_id=None)
        self.consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        self.consumer.seek_to_beginning()
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scale-collector", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            records = self.consumer.poll(timeout_ms=50)
            now = time.time()
            got = []
            for batch in records.values():
                for record in batch:
                    result = json.loads(record.value)
                    got.append(
                        Arrival(
                            partition=int(result["camera_id"].rsplit("-", 1)[1]),
                            worker=result["worker_id"],
                            captured=datetime.fromisoformat(result["captured_at"]).timestamp(),
                            arrived=now,
                            frame_id=result["frame_id"],
                        )
                    )
            with self.lock:
                self.arrivals.extend(got)

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    def wait_stable(
        self, workers: set[str], partitions: int, timeout_s: float, window_s: float = 1.5, fresh_s: float = 2.0
    ) -> bool:
        """Until every partition had a result in the last `window_s`, from exactly `workers`, and
        every one of those results was captured less than `fresh_s` before it arrived (no backlog
        left from the last event)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = time.time()
            window = [a for a in self.snapshot() if a.arrived >= now - window_s]
            recent = owners(window, now - window_s, now)
            caught_up = all(a.arrived - a.captured < fresh_s for a in window)
            if len(recent) == partitions and set(recent.values()) == workers and caught_up:
                return True
            time.sleep(0.2)
        silent = sorted(set(range(partitions)) - recent.keys())
        print(
            f"  (not settled on {sorted(workers)}: results from {sorted(set(recent.values()))}, "
            f"none on partitions {silent}, caught up: {caught_up})",
            file=sys.stderr,
        )
        return False

    def wait_for(self, frame_ids: set[str], timeout_s: float) -> list[Arrival]:
        """The arrivals of `frame_ids`, once all came (or at the timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = [a for a in self.snapshot() if a.frame_id in frame_ids]
            if len({a.frame_id for a in seen}) >= len(frame_ids):
                return seen
            time.sleep(0.1)
        return [a for a in self.snapshot() if a.frame_id in frame_ids]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5.0)
        self.consumer.close()


class Cameras:
    """`cameras` cameras, camera i publishing to partition i, paced in a thread or in one burst."""

    def __init__(self, kafka: KafkaSettings, topic: str, cameras: int):
        self.producer = build_producer(kafka, linger_ms=2)
        self.topic, self.cameras = topic, cameras
        rgb = np.random.default_rng(0).integers(0, 255, (FRAME_SIDE, FRAME_SIDE, 3), dtype=np.uint8)
        self.payload = encode_image(rgb)
        self.sent: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, camera: int) -> str:
        meta = build_frame_meta(
            camera_id=f"cam-{camera:02d}",
            line_id="line-1",
            object_name="part",
            content_type="image/jpeg",
            width=FRAME_SIDE,
            height=FRAME_SIDE,
        )
        self.producer.send(
            self.topic, value=self.payload, key=meta.camera_id.encode(), headers=frame_headers(meta), partition=camera
        )
        self.sent.add(meta.frame_id)
        return meta.frame_id

    def burst(self, per_camera: int) -> set[str]:
        ids = {self.send(camera) for _ in range(per_camera) for camera in range(self.cameras)}
        self.producer.flush(60.0)
        return ids

    def pace(self, fps_per_camera: float) -> None:
        """Publish every camera at `fps_per_camera` until `stop` (round-robin, evenly spaced)."""
        self.stop()
        self._stop.clear()
        interval = 1.0 / (fps_per_camera * self.cameras)

        def loop() -> None:
            due, camera = time.monotonic(), 0
            while not self._stop.is_set():
                self.send(camera)
                camera = (camera + 1) % self.cameras
                due += interval
                self._stop.wait(max(0.0, due - time.monotonic()))

        self._thread = threading.Thread(target=loop, name="scale-cameras", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5.0)
            self._thread = None
        self.producer.flush(30.0)

    def close(self) -> None:
        self.stop()
        self.producer.close()
