"""The dashboard's overlays cost memory bounded by the frame limits and the display size, whatever
dimensions a small compressed frame claims."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.codecs import decode_image, mask_to_rle
from common.messages import frame_headers
from common.schemas import FrameMeta, utc_now
from common.settings import DashboardSettings, LinewatchSettings, WorkerSettings
from tests.unit.test_dashboard_app import Recorder, login, result
from worker.dashboard.app import build_app
from worker.dashboard.auth import parse_credentials
from worker.dashboard.images import OVERLAY_MAX_SIDE
from worker.dashboard.kafka_io import FetchedRecord
from worker.dashboard.state import LiveState
from worker.dashboard.web import Backend

REPO = Path(__file__).resolve().parents[2]


def huge_png(width: int, height: int) -> bytes:
    """A black RGB PNG of width x height, compressed row by row: a few hundred KB, never the pixels in memory."""
    zipper, chunks, row = zlib.compressobj(9), [], b"\0" * (1 + 3 * width)
    for _ in range(height):
        chunks.append(zipper.compress(row))
    data = b"".join(chunks) + zipper.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


MEASURE = """
import json, resource, sys
from pathlib import Path
from tests.unit.test_dashboard_app import result
from tests.unit.test_dashboard_images import huge_png
from worker.dashboard.images import render_overlay
import numpy as np
from common.codecs import decode_image, heatmap_to_png
hot = result().model_copy(update={"heatmap": heatmap_to_png(np.linspace(0, 1, 128 * 128).reshape(128, 128))})
frame = huge_png(6300, 6300)
small = render_overlay(huge_png(64, 64), hot)  # imports and first-use allocations out of the way
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
picture = render_overlay(frame, hot, max_bytes=20_000_000, max_pixels=40_000_000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"png_bytes": len(frame), "grew_mb": (after - before) / 1024, "shape": decode_image(picture).shape}))
"""


def test_a_small_png_of_6300x6300_is_drawn_at_display_size_in_bounded_memory():
    done = subprocess.run([sys.executable, "-c", MEASURE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["png_bytes"] < 300_000
    assert measured["shape"] == [OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE, 3]
    # decoding the frame's own 119 MB of RGB is the peak; drawing at full size took 2.27 GB
    assert measured["grew_mb"] < 300, measured


class OneFrame:
    def __init__(self, png: bytes) -> None:
        meta = FrameMeta(frame_id="f-1", camera_id="cam-1", line_id="line-1", object_name="screw",
                         captured_at=utc_now(), content_type="image/png", width=64, height=64)  # fmt: skip
        self.record = FetchedRecord(key=b"cam-1", value=png, headers=list(frame_headers(meta)))

    def read(self, topic, partition, offset):
        return self.record


def overlay_client(png: bytes, **result_fields):
    settings = LinewatchSettings(
        dashboard=DashboardSettings(users=SecretStr("vic:view-pass:viewer")),
        worker=WorkerSettings(max_frame_pixels=40_000_000),
    )
    state = LiveState()
    state.add_result(result().model_copy(update=result_fields))
    b = Backend(settings, parse_credentials(settings.dashboard.users, None), state, Recorder(), OneFrame(png))
    client = TestClient(build_app(b), base_url="http://dash.test")
    login(client, "vic", "view-pass")
    return b, client


def overlay_of(png: bytes, outlined=None):
    return overlay_client(png, mask=outlined)[1].get("/api/frames/cam-1/f-1/overlay.jpg")


def test_the_overlay_endpoint_draws_a_huge_frame_at_display_size_with_its_mask_scaled():
    mask = np.zeros((4000, 2000), bool)
    mask[1000:3000, 500:1500] = True
    picture = overlay_of(huge_png(2000, 4000), mask_to_rle(mask))
    assert picture.headers["content-type"] == "image/jpeg"
    drawn = decode_image(picture.content)
    assert drawn.shape == (OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE // 2, 3)
    assert drawn[320, 160].max() > 200 and drawn[160, 80].max() < 30  # the outline, scaled; black elsewhere


def test_a_frame_over_the_frame_limits_is_refused_before_decoding():
    picture = overlay_of(huge_png(9000, 9000))  # 81 M pixels by its header, 40 M allowed
    assert picture.headers["content-type"].startswith("image/svg+xml")
    assert b"frame not shown" in picture.content and b"too_many_pixels" in picture.content


def test_a_heatmap_claiming_huge_dimensions_is_refused_before_decoding():
    from common.schemas import Heatmap

    huge = Heatmap(width=9000, height=9000, png_base64=base64.b64encode(huge_png(9000, 9000)).decode())
    b, client = overlay_client(huge_png(64, 64), heatmap=huge)
    picture = client.get("/api/frames/cam-1/f-1/overlay.jpg")
    assert b"frame not shown" in picture.content and b"too_many_pixels" in picture.content


class ManyFrames:
    """Frame `g-<offset>` at every offset: a 4000x4000 PNG each."""

    def __init__(self) -> None:
        self.png = huge_png(4000, 4000)

    def read(self, topic, partition, offset):
        meta = FrameMeta(frame_id=f"g-{offset}", camera_id="cam-1", line_id="line-1", object_name="screw",
                         captured_at=utc_now(), content_type="image/png", width=4000, height=4000)  # fmt: skip
        return FetchedRecord(key=b"cam-1", value=self.png, headers=list(frame_headers(meta)))


def test_grids_asking_for_many_huge_frames_at_once_get_them_drawn_two_at_a_time():
    b, client = overlay_client(huge_png(64, 64))
    b.reader = ManyFrames()
    for n in range(12):
        source = result().source.model_copy(update={"offset": n})
        b.state.add_result(result(frame=f"g-{n}").model_copy(update={"source": source}))
    start, statuses = threading.Barrier(12), []

    def fetch(n: int) -> None:
        start.wait()
        response = client.get(f"/api/frames/cam-1/g-{n}/overlay.jpg")
        statuses.append(response.headers["content-type"] if response.status_code == 200 else response.text[-200:])

    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert statuses == ["image/jpeg"] * 12  # all drawn, in turn
    assert b.renders.peak == 2 and b.renders.admitted == 0  # never more than two decoded frames at once
