"""Frame sources: synthetic scene, image folder ordering, video file round trip."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from producer.sources import (
    FolderSource,
    SourceError,
    StreamSource,
    SyntheticSource,
    VideoSource,
    list_images,
    open_source,
)


def _take(source, n):
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == n:
            break
    return frames


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_for_a_seed():
    a = _take(SyntheticSource(width=160, height=120, seed=7, defect_rate=0.5), 12)
    b = _take(SyntheticSource(width=160, height=120, seed=7, defect_rate=0.5), 12)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.rgb, fb.rgb)
        assert fa.defective == fb.defective
        assert np.array_equal(fa.defect_mask, fb.defect_mask)
    c = _take(SyntheticSource(width=160, height=120, seed=8, defect_rate=0.5), 12)
    assert any(not np.array_equal(fa.rgb, fc.rgb) for fa, fc in zip(a, c))


def test_synthetic_frame_shape_and_motion():
    frames = _take(SyntheticSource(width=200, height=150, seed=1, defect_rate=0.0), 3)
    for i, frame in enumerate(frames):
        assert frame.rgb.shape == (150, 200, 3) and frame.rgb.dtype == np.uint8
        assert (frame.width, frame.height) == (200, 150)
        assert frame.index == i
        assert frame.defective is False and not frame.defect_mask.any()
    # The belt moves: consecutive frames differ well beyond the sensor noise.
    diff = np.abs(frames[0].rgb.astype(int) - frames[1].rgb.astype(int))
    assert (diff > 40).mean() > 0.005


@pytest.mark.parametrize("rate", [0.0, 0.25, 1.0])
def test_synthetic_defect_fraction(rate):
    n = 400
    frames = list(SyntheticSource(width=96, height=72, seed=3, defect_rate=rate, limit=n, noise=0))
    assert len(frames) == n
    flags = np.array([f.defective for f in frames])
    assert abs(flags.mean() - rate) <= 0.06
    # Ground truth is consistent: defective frames carry a non-empty mask, good frames none.
    for frame in frames:
        assert frame.defect_mask.shape == (72, 96)
        assert bool(frame.defect_mask.any()) == frame.defective


def test_synthetic_defects_are_drawn_where_the_mask_says():
    defective = SyntheticSource(width=160, height=120, seed=5, defect_rate=1.0, noise=0)
    clean = SyntheticSource(width=160, height=120, seed=5, defect_rate=0.0, noise=0)
    for fd, fc in zip(_take(defective, 5), _take(clean, 5)):
        changed = np.any(fd.rgb != fc.rgb, axis=2)
        assert changed.any()
        assert changed[fd.defect_mask].mean() > 0.5  # the mask covers the drawn defect
        assert not changed[~fd.defect_mask].any()  # nothing else differs


def test_synthetic_rejects_bad_parameters():
    with pytest.raises(SourceError):
        SyntheticSource(defect_rate=1.5)
    with pytest.raises(SourceError):
        SyntheticSource(width=10, height=10)
    with pytest.raises(SourceError, match="unknown synthetic parts"):
        SyntheticSource(parts="bolts")


def _colour_share(frames, rgb) -> float:
    """Fraction of pixels within 12 grey levels of `rgb` in each channel (the part's face colour)."""
    pixels = np.concatenate([f.rgb.reshape(-1, 3).astype(int) for f in frames])
    return float((np.abs(pixels - np.array(rgb)).max(axis=1) <= 12).mean())


def test_synthetic_parts_one_product_or_mixed():
    from producer.sources.synthetic import PART_COLOURS

    mixed = _take(SyntheticSource(seed=3, defect_rate=0.0), 30)
    washers = _take(SyntheticSource(seed=3, defect_rate=0.0, parts="washers"), 30)
    others = PART_COLOURS[1:4]  # yellow, blue, red (the white parts' face is a grey washer's highlight)
    assert sum(_colour_share(mixed, rgb) for rgb in others) > 0.02
    assert sum(_colour_share(washers, rgb) for rgb in others) < 0.001
    assert _colour_share(washers, PART_COLOURS[0]) > 0.03
    assert open_source("synthetic", parts="washers", limit=1).colours == [PART_COLOURS[0]]


# --------------------------------------------------------------------------- folder


def _write_png(path: Path, value: int, size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_folder_order_is_sorted_recursive_and_natural(tmp_path):
    names = ["b/img1.png", "a/img10.png", "a/img2.png", "a/IMG3.jpg", "top.jpeg", "a/sub/z.png"]
    for i, name in enumerate(names):
        path = tmp_path / name
        if name.endswith((".jpg", ".jpeg")):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 8, 3), i * 30, np.uint8)).save(path, format="JPEG")
        else:
            _write_png(path, i * 30)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    _write_png(tmp_path / ".hidden" / "x.png", 1)
    listed = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert listed == ["a/img2.png", "a/IMG3.jpg", "a/img10.png", "a/sub/z.png", "b/img1.png", "top.jpeg"]

    frames = list(FolderSource(tmp_path))
    assert [f.name for f in frames] == listed
    assert [f.index for f in frames] == list(range(len(listed)))
    # The original bytes travel unchanged, labelled with their real format.
    assert frames[0].data == (tmp_path / "a/img2.png").read_bytes()
    assert frames[0].content_type == "image/png"
    assert frames[1].content_type == "image/jpeg"
    assert frames[0].rgb.shape == (6, 8, 3)


def test_folder_skips_undecodable_files_and_loops(tmp_path):
    _write_png(tmp_path / "1.png", 10)
    (tmp_path / "2.png").write_bytes(b"\x89PNG truncated")
    _write_png(tmp_path / "3.png", 30)
    frames = _take(FolderSource(tmp_path, loop=True), 5)
    assert [f.name for f in frames] == ["1.png", "3.png", "1.png", "3.png", "1.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "missing")
    with pytest.raises(SourceError, match="no .jpg"):
        FolderSource(tmp_path)


# --------------------------------------------------------------------------- video


def _write_video(path: Path, n: int, size=(64, 48)) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    frames = []
    for i in range(n):
        rgb = np.zeros((size[1], size[0], 3), np.uint8)
        rgb[:, :, 0] = 20 + i * 20  # red ramps with the frame number
        rgb[:, :, 2] = 200 - i * 20
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames.append(rgb)
    writer.release()
    return frames


def test_video_file_round_trip(tmp_path):
    path = tmp_path / "clip.avi"
    written = _write_video(path, 6)
    source = VideoSource(path)
    try:
        assert source.fps == pytest.approx(12.0, abs=0.5)
        frames = list(source)
    finally:
        source.close()
    assert len(frames) == 6
    for frame, expected in zip(frames, written):
        assert frame.rgb.shape == (48, 64, 3)
        # MJPG is lossy; the colour (and so RGB channel order) must survive.
        assert np.abs(frame.rgb.astype(int) - expected.astype(int)).mean() < 6


def test_video_loop_restarts(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path, 3)
    with VideoSource(path, loop=True) as source:
        frames = _take(source, 7)
    reds = [int(f.rgb[..., 0].mean()) for f in frames]
    assert len(frames) == 7
    assert abs(reds[3] - reds[0]) < 6 and abs(reds[6] - reds[0]) < 6
    assert reds[1] > reds[0] + 10


def test_open_source_notation(tmp_path):
    _write_png(tmp_path / "a.png", 1)
    assert isinstance(open_source(f"folder:{tmp_path}"), FolderSource)
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert isinstance(open_source("synthetic", width=64, height=64), SyntheticSource)
    video = tmp_path / "v.avi"
    _write_video(video, 2)
    with open_source(f"video:{video}") as source:
        assert isinstance(source, VideoSource) and not source.live
    with pytest.raises(SourceError, match="unknown source"):
        open_source("nonsense")
    with pytest.raises(SourceError, match="camera index"):
        open_source("camera:front")
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"video:{tmp_path / 'missing.mp4'}")


def test_network_stream_through_opencv(tmp_path):
    """A stream URL (here a video served over local HTTP) is read by OpenCV's FFmpeg backend."""
    _write_video(tmp_path / "clip.avi", 4)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.avi"
        with StreamSource(url, reconnect_attempts=0) as source:
            assert source.live
            frames = list(source)
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) == 4 and frames[0].rgb.shape == (48, 64, 3)


def test_unreachable_stream_error_hides_credentials():
    with pytest.raises(SourceError) as exc:
        open_source("rtsp://operator:s3cret@127.0.0.1:1/stream")
    assert "s3cret" not in str(exc.value) and "***@127.0.0.1:1" in str(exc.value)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
