"""The operator dashboard end to end, in a real browser (Debian's headless Chromium + chromedriver):
real Kafka broker, a tiny-profile worker in a thread, the synthetic producer's frames.

Set LINEWATCH_SCREENSHOTS=DIR to keep the grid and frame-page screenshots (scripts/dashboard_screenshots.sh).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from common.codecs import decode_image, rle_to_mask
from common.control import FeedbackRecord
from common.kafka import build_consumer, build_producer, ensure_topics
from common.schemas import InspectionResult
from common.settings import (
    DashboardSettings,
    KafkaSettings,
    LinewatchSettings,
    ModelSettings,
    TelemetrySettings,
    WorkerSettings,
)
from producer.publisher import FramePublisher
from producer.sources import SyntheticSource
from worker.alarms.events import AlarmEvent, MaskRef
from worker.dashboard.images import heatmap_array
from worker.dashboard.server import dashboard_in_thread
from worker.inspection.overlays import heat_level
from worker.stream.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

CAMERAS = ["cam-a", "cam-b", "cam-c"]
CHROMEDRIVER = "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(kafka_broker) -> LinewatchSettings:
    tag = uuid.uuid4().hex[:8]
    return LinewatchSettings(
        kafka=KafkaSettings(
            bootstrap_servers=kafka_broker.bootstrap, frames_topic=f"dash.frames.{tag}",
            results_topic=f"dash.results.{tag}", dlq_topic=f"dash.dlq.{tag}", alarms_topic=f"dash.alarms.{tag}",
            feedback_topic=f"dash.feedback.{tag}", group_id=f"dash-workers-{tag}", partitions=2,
        ),
        models=ModelSettings(profile="tiny", foreground="none"),
        # The tiny random model's maps average 0.22-0.37 at the heatmap's 32 px. With the pixel threshold at
        # 0.64 the overlay's heat level (half of it) leaves most of a frame its own colours, some spots heated.
        worker=WorkerSettings(
            worker_id="dash-worker", batch_max_frames=4, commit_interval_ms=200, heatmap_side=32, pixel_threshold=0.64
        ),
        telemetry=TelemetrySettings(enabled=False),
        dashboard=DashboardSettings(
            users=SecretStr("olga:op-secret:operator"), state_topic=f"dash.state.{tag}", group_id=f"dash-{tag}",
            push_interval_ms=100,
        ),
    )  # fmt: skip


def browser(user_data: Path):
    from selenium import webdriver  # the test extra
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists():
        pytest.fail("chromium-driver is not installed: bash scripts/install_system_deps.sh", pytrace=False)
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1200,760", f"--user-data-dir={user_data}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class ResultWatcher:
    """Reads the results topic in a thread and notes when each frame's result arrived."""

    def __init__(self, settings: LinewatchSettings) -> None:
        self.seen: dict[str, tuple[float, InspectionResult]] = {}
        self.where: dict[str, tuple[int, int]] = {}  # frame id -> (partition, offset) of its result
        self.stop = threading.Event()
        self.consumer = build_consumer(settings.kafka, settings.kafka.results_topic, group_id=f"w-{uuid.uuid4().hex}")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                for record in records:
                    result = InspectionResult.model_validate_json(record.value)
                    self.seen.setdefault(result.frame_id, (time.monotonic(), result))
                    self.where.setdefault(result.frame_id, (record.partition, record.offset))
        self.consumer.close()


def screenshot(driver, path: Path) -> None:
    """A PNG of the page, reduced to 128 colours so that it is small enough to commit."""
    from PIL import Image

    driver.save_screenshot(str(path))
    Image.open(path).convert("RGB").quantize(128).save(path, optimize=True)


def wait(predicate, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def publish_round(publisher: FramePublisher, source_iter, cameras=CAMERAS, kept: dict | None = None) -> list[str]:
    ids = []
    for camera in cameras:
        frame = next(source_iter)
        meta, future = publisher.publish_array(frame.rgb, camera_id=camera, line_id="line-1", object_name="washer")
        future.get(timeout=10)
        ids.append(meta.frame_id)
        if kept is not None:
            kept[meta.frame_id] = frame.rgb
    return ids


def low_score_pixels(result: InspectionResult, shape: tuple[int, int], level: float) -> np.ndarray:
    """Pixels well below the overlay's heat level and away from the outline (JPEG blurs edges a little)."""
    heat = cv2.resize(heatmap_array(result), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    near_heat = cv2.dilate((heat > level).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    mask = rle_to_mask(result.mask) if result.mask is not None else np.zeros(shape, bool)
    near_outline = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    return ~near_heat & ~near_outline


def assert_overlays_keep_the_frame_where_scores_are_low(base, cookies, frames, watcher, level) -> None:
    """The served overlay of each frame: its own colours where the map is low (JPEG's error only), heat elsewhere."""
    low_pixels = tinted = 0
    for frame_id, rgb in frames.items():
        result = watcher.seen[frame_id][1]
        partition, offset = watcher.where[frame_id]
        url = f"{base}/api/frames/{result.camera_id}/{frame_id}/overlay.jpg?partition={partition}&offset={offset}"
        reply = httpx.get(url, cookies=cookies)
        assert reply.headers["content-type"] == "image/jpeg", reply.text[:200]
        served = decode_image(reply.content).astype(int)
        low = low_score_pixels(result, rgb.shape[:2], level)
        if low.any():
            assert np.abs(served[low] - rgb[low]).mean() < 4, frame_id  # no blue wash over low scores
            low_pixels += int(low.sum())
        heat = cv2.resize(heatmap_array(result), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        hot = cv2.erode((heat > level + 0.01).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if hot.sum() > 50:
            assert np.abs(served[hot] - rgb[hot]).mean() > 8, frame_id  # heat where the map passes the level
            tinted += 1
    assert low_pixels > 0.3 * sum(rgb.shape[0] * rgb.shape[1] for rgb in frames.values())
    print(f"overlays: {low_pixels} low-score pixels kept the frame's colours; {tinted} frames with heat")


def publish_alarm(settings: LinewatchSettings, result: InspectionResult, partition: int, offset: int) -> None:
    event = AlarmEvent(
        alarm_id=str(uuid.uuid4()), kind="anomaly", rule="defect-burst", line_id=result.line_id,
        camera_id=result.camera_id, object_name=result.object_name, frame_ids=[result.frame_id],
        scores=[result.score], masks=[MaskRef(frame_id=result.frame_id, topic=settings.kafka.results_topic,
                                              partition=partition, offset=offset)],
        message=f"1 of the last 1 frames of line-1/{result.camera_id} anomalous",
    )  # fmt: skip
    producer = build_producer(settings.kafka)
    producer.send(settings.kafka.alarms_topic, key=event.key, value=event.model_dump_json().encode()).get(timeout=10)
    producer.close()


def feedback_records(settings: LinewatchSettings, frame_id: str, timeout_s: float = 20) -> list[FeedbackRecord]:
    consumer = build_consumer(settings.kafka, settings.kafka.feedback_topic, group_id=f"fb-{uuid.uuid4().hex}")
    found: list[FeedbackRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not found:
            for records in consumer.poll(timeout_ms=300).values():
                for record in records:
                    parsed = FeedbackRecord.model_validate_json(record.value)
                    if parsed.frame_id == frame_id:
                        found.append(parsed)
                        assert record.key == parsed.camera_id.encode()
    finally:
        consumer.close()
    return found


def test_an_operator_watches_the_line_and_flags_a_false_alarm(kafka_broker, tmp_path):
    from selenium.webdriver.common.by import By

    settings = make_settings(kafka_broker)
    ensure_topics(settings.kafka, [settings.kafka.frames_topic, settings.kafka.results_topic,
                                   settings.kafka.alarms_topic, settings.kafka.feedback_topic])  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shots = Path(os.environ.get("LINEWATCH_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    stop_worker = threading.Event()
    service = WorkerService(settings)
    worker = threading.Thread(target=service.run, args=(stop_worker,), daemon=True)
    user_data = Path(tempfile.mkdtemp(prefix="lw-chromium-"))
    source = iter(SyntheticSource(width=320, height=240, seed=7, defect_rate=0.3))
    with dashboard_in_thread(settings, port=port) as dash, FramePublisher(settings.kafka) as publisher:
        worker.start()
        watcher = ResultWatcher(settings)
        driver = browser(user_data)
        try:
            # refused without a login: the page sends the browser to /login, the API answers 401
            driver.get(base + "/")
            assert "/login" in driver.current_url
            assert httpx.get(base + "/api/state").status_code == 401
            assert httpx.get(base + "/healthz").json() == {"status": "alive"}

            driver.find_element(By.ID, "user").send_keys("olga")
            driver.find_element(By.ID, "password").send_keys("op-secret")
            driver.find_element(By.ID, "submit").click()
            wait(lambda: driver.current_url.rstrip("/") == base, 10, "the grid after login")

            frames: dict = {}
            first = publish_round(publisher, source, kept=frames)
            wait(lambda: all(f in watcher.seen for f in first), 240, "results of the first frames")
            tiles = wait(lambda: [driver.find_elements(By.ID, f"tile-{c}") for c in CAMERAS]
                         if all(driver.find_elements(By.ID, f"tile-{c}") for c in CAMERAS) else None,
                         30, "a tile for every camera")  # fmt: skip
            assert len(tiles) == len(CAMERAS)

            # a new result appears on the page within 2 s of being published
            (new_id,) = publish_round(publisher, source, ["cam-b"])
            wait(lambda: new_id in watcher.seen, 120, "the new result on the results topic")
            seen_at = watcher.seen[new_id][0]
            wait(lambda: driver.find_element(By.ID, "tile-cam-b").get_attribute("data-frame") == new_id,
                 5, "the new result on the page", poll_s=0.02)  # fmt: skip
            delay = time.monotonic() - seen_at
            print(f"page update delay: {delay:.3f} s")
            assert delay < 2.0

            # a few more rounds, so that the trends and rates have something to show
            more = [f for _ in range(4) for f in publish_round(publisher, source, kept=frames)]
            wait(lambda: all(f in watcher.seen for f in more), 240, "results of the later rounds")

            # an alarm on the frame above, for the alarm list (and the screenshot)
            assert {c["camera_id"] for c in dash.state.changes_since(0)["cameras"]} == set(CAMERAS)
            publish_alarm(settings, watcher.seen[new_id][1], *watcher.where[new_id])
            wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#alarms li"), 15, "the alarm in the list")
            wait(lambda: driver.execute_script(
                "return [...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth > 0)"),
                 20, "every tile's overlay image")  # fmt: skip
            screenshot(driver, shots / "dashboard-grid.png")

            # the frame page, and one click on "false alarm" puts a record on the feedback topic
            clicked = driver.find_element(By.ID, "tile-cam-b").get_attribute("data-frame")
            result = watcher.seen[clicked][1]
            driver.find_element(By.ID, "tile-cam-b").click()
            wait(lambda: "/frame/cam-b/" in driver.current_url, 10, "the frame page")
            wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#details table"), 10, "the result's details")
            wait(lambda: driver.execute_script("const i = document.getElementById('overlay');"
                                               "return i.complete && i.naturalWidth > 0"), 15, "the overlay")  # fmt: skip
            assert "Timings" in driver.find_element(By.ID, "details").text
            screenshot(driver, shots / "dashboard-frame.png")
            cookies = {cookie["name"]: cookie["value"] for cookie in driver.get_cookies()}
            level = heat_level(settings.worker.pixel_threshold)
            assert_overlays_keep_the_frame_where_scores_are_low(base, cookies, frames, watcher, level)
            driver.find_element(By.ID, "fb-false_alarm").click()
            wait(lambda: driver.find_element(By.ID, "feedback-status").get_attribute("data-saved") == "false_alarm",
                 10, "the saved confirmation")  # fmt: skip
            (record,) = feedback_records(settings, clicked)
            assert (record.label, record.by, record.camera_id) == ("false_alarm", "olga", "cam-b")
            assert record.source == result.source and record.raw_score == result.raw_score

            # logged out again, the pages and the API are refused
            driver.delete_all_cookies()
            driver.get(base + f"/frame/cam-b/{new_id}")
            assert "/login" in driver.current_url
        finally:
            driver.quit()
            shutil.rmtree(user_data, ignore_errors=True)
            watcher.stop.set()
            stop_worker.set()
            worker.join(60)
