"""The whole Inspector on synthetic frames with the tiny profile (mechanics, not accuracy)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from common.codecs import encode_image, rle_to_mask
from common.schemas import FrameMeta, InspectionResult, utc_now
from common.settings import ModelSettings, WorkerSettings
from tests.support.synthetic import make_synthetic_scene
from worker.inspection.embedding_cache import LruEmbeddingCache
from worker.inspection.inspector import Inspector, build_inspector
from worker.inspection.types import Frame
from worker.stream.results import build_result

pytestmark = pytest.mark.models  # run again with models.precision=auto forced (make test-precisions)


@pytest.fixture(scope="module")
def inspector():
    return build_inspector(ModelSettings(profile="tiny", foreground="sam+isnet"))


def _frames(count, **scene):
    return [Frame(f"f{i}", make_synthetic_scene(seed=i, **scene).image, "metal nut") for i in range(count)]


def test_end_to_end_one_instance_per_object(inspector):
    scene = make_synthetic_scene(seed=3, n_objects=3, defects=[1])
    (inspection,) = inspector.inspect([Frame("a", scene.image, "metal nut")])
    assert 0.0 <= inspection.score <= 1.0
    assert inspection.anomaly_map.shape == scene.image.shape[:2] and inspection.anomaly_map.dtype == np.float32
    assert 0.0 <= inspection.anomaly_map.min() and inspection.anomaly_map.max() <= 1.0
    assert len(inspection.instances) == 3  # IS-Net finds each part; tiny SAM's random masks do not change that
    for obj_mask in scene.object_masks:
        ys, xs = np.nonzero(obj_mask)
        assert any(
            i.box[0] <= xs.mean() <= i.box[0] + i.box[2] and i.box[1] <= ys.mean() <= i.box[1] + i.box[3]
            for i in inspection.instances
        )
    assert {"foreground_isnet", "foreground_sam", "tiling", "tile_score", "pixel_map", "aggregate"} <= set(
        inspection.timings_ms
    )


def test_batch_matches_single_frames_and_mixes_objects(inspector):
    frames = _frames(3, size=(240, 320))
    frames[1] = Frame("other", frames[1].image, "washer")
    batched = inspector.inspect(frames)
    single = [inspector.inspect([frame])[0] for frame in frames]
    assert [b.frame_id for b in batched] == ["f0", "other", "f2"]
    for b, s in zip(batched, single):
        assert b.score == pytest.approx(s.score, abs=1e-5)
        assert np.allclose(b.anomaly_map, s.anomaly_map, atol=1e-4)


def test_prompt_embeddings_are_computed_once_and_shared_through_the_cache(inspector):
    shared = LruEmbeddingCache()
    first = Inspector(inspector.models, inspector.settings, cache=shared)
    calls = inspector.text_encoder_calls
    first.inspect(_frames(1, size=(200, 200)))
    assert inspector.text_encoder_calls > calls
    calls = inspector.text_encoder_calls
    first.inspect(_frames(2, size=(200, 200)))  # same object: nothing new to encode
    second = Inspector(inspector.models, inspector.settings, cache=shared)  # a "new worker" with a warm cache
    second.inspect(_frames(1, size=(200, 200)))
    assert inspector.text_encoder_calls == calls


def test_every_prompt_lookup_reaches_the_one_cache_layer(inspector):
    assert isinstance(Inspector(inspector.models, inspector.settings).cache, LruEmbeddingCache)  # no shared cache
    seen = []
    cache = LruEmbeddingCache(on_lookup=lambda hit, kind, layer, count: seen.extend([(hit, kind, layer)] * count))
    counting = Inspector(inspector.models, inspector.settings, cache=cache)
    normal, anomalous = counting.prompts.state_prompts("metal nut")
    prompts = len(normal) + len(anomalous) + len(counting.prompts.localising)
    counting.inspect(_frames(1, size=(200, 200)))
    first = seen[:]
    assert len(first) == prompts and {kind for _, kind, _ in first} == {"clip-text", "clipseg-text"}
    counting.inspect(_frames(1, size=(200, 200)))  # warm: still seen by the hook, now as hits
    again = seen[len(first) :]
    assert len(again) == prompts and all(hit and layer == "lru" for hit, _, layer in again)


def test_result_message_round_trips(inspector):
    scene = make_synthetic_scene(seed=5, size=(240, 320))
    (inspection,) = inspector.inspect([Frame("r", scene.image, "metal nut")])
    meta = FrameMeta(
        frame_id="r",
        camera_id="cam",
        line_id="l1",
        object_name="metal nut",
        captured_at=utc_now(),
        content_type="image/png",
        width=320,
        height=240,
    )
    worker = WorkerSettings(threshold=0.3, pixel_threshold=0.2)
    result = build_result(meta, inspection, versions=inspector.versions, worker_settings=worker, worker_id="w1")
    parsed = InspectionResult.model_validate_json(result.model_dump_json())
    mask = rle_to_mask(parsed.mask)
    assert mask.shape == (240, 320) and (mask == (inspection.anomaly_map >= 0.2)).all()
    assert parsed.verdict == ("anomalous" if inspection.score >= 0.3 else "ok")
    assert parsed.versions.profile == "tiny" and parsed.versions.threshold_version == worker.threshold_version
    assert sum(r.area for r in parsed.regions) == mask.sum() or len(parsed.regions) == 50
    assert len(result.model_dump_json()) < 1_000_000


def test_cli_inspect_reports_bad_files_and_still_processes_the_rest(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode_image(make_synthetic_scene(seed=1, size=(200, 260)).image, "image/png"))
    (tmp_path / "text.jpg").write_bytes(b"not an image at all")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(encode_image(make_synthetic_scene(seed=2, size=(200, 260)).image, "image/jpeg")[:500])
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "inspect",
            str(good),
            str(tmp_path / "text.jpg"),
            str(truncated),
            str(tmp_path / "missing.png"),
            "--object",
            "washer",
            "--profile",
            "tiny",
            "--foreground",
            "isnet",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["camera_id"] == "cli" and lines[0]["versions"]["profile"] == "tiny"
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and any("cut.jpg" in e for e in errors) and any("missing.png" in e for e in errors)
    assert "RANDOM weights" in run.stderr
    assert (out / "good_heatmap.png").is_file()


def test_cli_rejects_unknown_profile():
    run = subprocess.run(
        [sys.executable, "-m", "worker.cli", "inspect", "x.png", "--object", "a", "--profile", "huge"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "invalid choice: 'huge'" in run.stderr


def test_shared_tiles_cut_fewer_tiles_for_the_same_instances():
    frames = [
        Frame(f"s{i}", make_synthetic_scene(seed=i, n_objects=5, object_scale=0.8).image, "nut") for i in range(3)
    ]
    own = build_inspector(ModelSettings(profile="tiny", foreground="isnet"))
    shared = build_inspector(ModelSettings(profile="tiny", foreground="isnet", tiles="shared"))
    apart, together = own.inspect(frames), shared.inspect(frames)
    assert shared.tiles_planned < own.tiles_planned
    for one, other in zip(apart, together):
        assert [i.box for i in one.instances] == [i.box for i in other.instances]
        assert all(i.tiles == 1 for i in other.instances)  # small parts: each in exactly one shared tile
        assert 0.0 <= other.score <= 1.0 and other.anomaly_map.shape == one.anomaly_map.shape
    # instances that share a tile share its score: fewer distinct scores than instances somewhere
    assert any(len({i.score for i in other.instances}) < len(other.instances) for other in together)
