"""Dashboard load benchmark: N cameras x R results/s of synthetic InspectionResults straight onto the
results topic (no models), a live page's event stream read alongside. Prints the dashboard's
consumer lag and the page update delay (result published -> its update in the page's stream).

    python -m worker.dashboard.bench --bootstrap-servers 127.0.0.1:9092 [--cameras 50 --rate 5 --seconds 30]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
import uuid
from datetime import datetime, timezone

import httpx
import numpy as np
from pydantic import SecretStr

from common.codecs import heatmap_to_png, mask_to_rle
from common.kafka import build_producer, ensure_topics
from common.schemas import InspectionResult, SourceRef, Versions, utc_now
from common.settings import DashboardSettings, KafkaSettings, LinewatchSettings, TelemetrySettings
from worker.dashboard.server import dashboard_in_thread

TOKEN = "bench-token"


def template() -> InspectionResult:
    rng = np.random.default_rng(0)
    heat = rng.random((96, 128)).astype(np.float32)
    mask = np.zeros((480, 640), dtype=bool)
    mask[200:240, 300:340] = True
    now = utc_now()
    return InspectionResult(
        frame_id="x",
        camera_id="x",
        line_id="line-1",
        object_name="washer",
        captured_at=now,
        processed_at=now,
        score=0.3,
        raw_score=0.3,
        threshold=0.5,
        verdict="ok",
        mask=mask_to_rle(mask),
        heatmap=heatmap_to_png(heat),
        versions=Versions(model_fingerprint="bench", profile="bench", prompt_set="ps", threshold_version="static-0.5"),
        worker_id="bench",
        source=SourceRef(topic="none", partition=0, offset=0),
    )


def read_stream(url: str, delays: list[float], stop: threading.Event) -> None:
    """The page's view: every camera update in the event stream, delay from its processed_at."""
    seen: set[str] = set()
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=None) as response:
        for line in response.iter_lines():
            if stop.is_set():
                return
            if not line.startswith("data:"):
                continue
            now = time.time()
            for camera in json.loads(line[5:])["cameras"]:
                latest = camera.get("latest")
                if latest and latest["frame_id"] not in seen:
                    seen.add(latest["frame_id"])
                    delays.append(now - datetime.fromisoformat(latest["processed_at"]).timestamp())


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if values else float("nan")


def run(bootstrap: str, cameras: int, rate: float, seconds: float) -> dict:
    tag = uuid.uuid4().hex[:8]
    settings = LinewatchSettings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            results_topic=f"bench.results.{tag}",
            alarms_topic=f"bench.alarms.{tag}",
            partitions=8,
        ),
        telemetry=TelemetrySettings(enabled=False),
        dashboard=DashboardSettings(tokens=SecretStr(f"{TOKEN}:bench:viewer"), state_topic=f"bench.state.{tag}"),
    )
    ensure_topics(settings.kafka, [settings.kafka.results_topic])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base, producer, delays, lags = template(), build_producer(settings.kafka), [], []
    stop = threading.Event()
    with dashboard_in_thread(settings, port=port) as dash:
        reader = threading.Thread(target=read_stream, args=(f"http://127.0.0.1:{port}/api/events", delays, stop))
        reader.daemon = True
        reader.start()
        time.sleep(3.0)  # the dashboard's group gets its partitions
        sent, start = 0, time.monotonic()
        next_lag = start
        while time.monotonic() - start < seconds:
            tick = start + sent / (cameras * rate)
            time.sleep(max(0.0, tick - time.monotonic()))
            for c in range(cameras):
                now = datetime.now(timezone.utc)
                result = base.model_copy(
                    update={
                        "frame_id": f"{tag}-{sent}",
                        "camera_id": f"cam-{c:02d}",
                        "captured_at": now,
                        "processed_at": now,
                    }
                )
                producer.send(
                    settings.kafka.results_topic, key=result.camera_id.encode(), value=result.model_dump_json().encode()
                )
                sent += 1
            if time.monotonic() >= next_lag:
                next_lag += 1.0
                lags.append(dash.state.changes_since(dash.state.version)["lag_total"])
        producer.flush(30)
        elapsed = time.monotonic() - start
        time.sleep(3.0)  # the last updates reach the page
        stop.set()
        shown = len(dash.state.changes_since(0)["cameras"])
    producer.close()
    return {
        "cameras": cameras,
        "target_results_per_s": cameras * rate,
        "seconds": round(elapsed, 1),
        "published": sent,
        "published_per_s": round(sent / elapsed, 1),
        "cameras_on_page": shown,
        "consumer_lag": {"p50": statistics.median(lags) if lags else None, "max": max(lags, default=None)},
        "page_update_delay_s": {
            "n": len(delays),
            "p50": percentile(delays, 50),
            "p95": percentile(delays, 95),
            "max": round(max(delays), 4) if delays else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--rate", type=float, default=5.0, help="results per second per camera")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.bootstrap_servers, args.cameras, args.rate, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
