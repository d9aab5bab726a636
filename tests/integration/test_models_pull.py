"""`linewatch-worker models pull` against a local HTTP server that serves the hub's file layout.

The server answers `/<repo>/resolve/<revision>/<file>` like huggingface.co (X-Repo-Commit, ETag,
Range) and `/sam/<file>` like Meta's download host. `HF_ENDPOINT` and
`LINEWATCH_MODELS__SAM_BASE_URL` point the real download code at it; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLIP_REPO = "timm/vit_base_patch16_plus_clip_240.laion400m_e31"
CLIPSEG_REPO = "CIDAS/clipseg-rd64-refined"
CLIPSEG_FILES = [
    "config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "pytorch_model.bin",
]
SAM_FILE = "sam_vit_b_01ec64.pth"


def _content(name: str, size: int) -> bytes:
    return hashlib.shake_256(name.encode()).digest(size)  # distinct, reproducible bytes per file


class Hub:
    """Files by URL path, a request log, and files whose first GET is cut after half the body."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)

    def add_hub(self, repo: str, name: str, data: bytes) -> None:
        self.files[f"/{repo}/resolve/{COMMIT}/{name}"] = data
        self.files[f"/{repo}/resolve/main/{name}"] = data

    def handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _head(self, data: bytes, start: int) -> None:
                partial = start > 0
                self.send_response(206 if partial else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if partial:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()

            def _lookup(self):
                path = self.path.split("?", 1)[0]
                hub.requests.append((self.command, path, self.headers.get("Range")))
                data = hub.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return path, data

            def do_HEAD(self):
                _, data = self._lookup()
                if data is not None:
                    self._head(data, 0)

            def do_GET(self):
                path, data = self._lookup()
                if data is None:
                    return
                header = self.headers.get("Range")
                start = int(header.split("=")[1].split("-")[0]) if header else 0
                self._head(data, start)
                if path in hub.cut_once and start == 0:
                    hub.cut_once.discard(path)
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        return Handler


@pytest.fixture()
def hub():
    state = Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.add_hub(CLIP_REPO, "open_clip_pytorch_model.bin", _content("clip", 3_000_000))
    for name in CLIPSEG_FILES:
        state.add_hub(CLIPSEG_REPO, name, _content(name, 2_500_000 if name.endswith(".bin") else 2_000))
    state.files[f"/sam/{SAM_FILE}"] = _content("sam", 4_000_000)
    yield state
    server.shutdown()
    server.server_close()


def _pins(path: Path, hub: Hub, pinned: bool = True, **overrides) -> Path:
    """A pins file shaped like worker/inspection/models/pins.json, for the files the test hub serves."""

    def digest(url_path: str) -> str | None:
        return hashlib.sha256(hub.files[url_path]).hexdigest() if pinned else None

    pins = json.loads((REPO / "worker/inspection/models/pins.json").read_text())
    pins["clip"].update(
        revision=COMMIT if pinned else None,
        files={"open_clip_pytorch_model.bin": digest(f"/{CLIP_REPO}/resolve/main/open_clip_pytorch_model.bin")},
    )
    pins["clipseg"].update(
        revision=COMMIT if pinned else None,
        files={n: digest(f"/{CLIPSEG_REPO}/resolve/main/{n}") for n in CLIPSEG_FILES},
    )
    pins["sam_vit_b"]["files"] = {SAM_FILE: hashlib.sha256(hub.files[f"/sam/{SAM_FILE}"]).hexdigest()}
    for key, files in overrides.items():
        pins[key]["files"].update(files)
    path.write_text(json.dumps(pins))
    return path


def _env(hub: Hub, dest: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEWATCH_", "HF_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(dest.parent / "hf-home"),
        LINEWATCH_MODELS__SAM_BASE_URL=f"{hub.url}/sam/",
        HF_HUB_DISABLE_XET="1",
        PYTHONPATH=str(REPO),
        **extra,
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _pull(hub: Hub, dest: Path, *extra: str) -> subprocess.CompletedProcess:
    return _cli(_env(hub, dest), "models", "pull", "--dest", str(dest), *extra)


def test_pull_puts_every_file_under_its_published_name_at_the_pinned_commit(hub, tmp_path):
    dest = tmp_path / "models"
    done = _pull(hub, dest, "--pins", str(_pins(tmp_path / "pins.json", hub)))
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {
        dest / "clip" / "open_clip_pytorch_model.bin": f"/{CLIP_REPO}/resolve/{COMMIT}/open_clip_pytorch_model.bin",
        dest / "sam" / SAM_FILE: f"/sam/{SAM_FILE}",
    }
    expected.update({dest / "clipseg" / n: f"/{CLIPSEG_REPO}/resolve/{COMMIT}/{n}" for n in CLIPSEG_FILES})
    for path, url_path in expected.items():
        assert path.read_bytes() == hub.files[url_path], path
        assert str(path) in done.stdout  # says where each file went
    assert not (dest / "clipseg" / "tokenizer.json").exists()
    # Only the pinned commit was asked for, never "main".
    hub_paths = [p for _, p, _ in hub.requests if "/resolve/" in p]
    assert hub_paths and all(f"/resolve/{COMMIT}/" in p for p in hub_paths)

    # A second pull finds everything in place and downloads nothing again.
    def file_gets() -> int:  # (huggingface_hub also asks the endpoint for its agent registry: not a file)
        return sum(1 for method, path, _ in hub.requests if method == "GET" and path in hub.files)

    gets = file_gets()
    again = _pull(hub, dest, "--pins", str(tmp_path / "pins.json"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert file_gets() == gets, hub.requests


def test_a_digest_mismatch_is_refused_naming_both_digests_and_leaves_no_file(hub, tmp_path):
    wrong = "f" * 64
    pins = _pins(tmp_path / "pins.json", hub, clip={"open_clip_pytorch_model.bin": wrong}, sam_vit_b={SAM_FILE: wrong})
    dest = tmp_path / "models"
    done = _pull(hub, dest, "--pins", str(pins))
    assert done.returncode == 1
    clip_actual = hashlib.sha256(hub.files[f"/{CLIP_REPO}/resolve/main/open_clip_pytorch_model.bin"]).hexdigest()
    sam_actual = hashlib.sha256(hub.files[f"/sam/{SAM_FILE}"]).hexdigest()
    for actual in (clip_actual, sam_actual):
        assert actual in done.stderr and wrong in done.stderr
    assert not (dest / "clip" / "open_clip_pytorch_model.bin").exists()
    assert not list((dest / "sam").iterdir())  # neither the file nor a .part
    assert (dest / "clipseg" / "pytorch_model.bin").is_file()  # the other models still came


def test_an_interrupted_transfer_resumes_with_a_range_request(hub, tmp_path):
    sam_path, clip_path = f"/sam/{SAM_FILE}", f"/{CLIP_REPO}/resolve/{COMMIT}/open_clip_pytorch_model.bin"
    hub.cut_once = {sam_path, clip_path}
    dest = tmp_path / "models"
    done = _pull(hub, dest, "--pins", str(_pins(tmp_path / "pins.json", hub)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (dest / "sam" / SAM_FILE).read_bytes() == hub.files[sam_path]
    assert (dest / "clip" / "open_clip_pytorch_model.bin").read_bytes() == hub.files[clip_path]
    gets = {
        path: [rng for method, p, rng in hub.requests if method == "GET" and p == path]
        for path in (sam_path, clip_path)
    }
    # SAM: the retry asks only for what is not on disk yet (what arrived before the cut, in whole chunks).
    assert len(gets[sam_path]) == 2 and gets[sam_path][0] is None, gets
    resumed_at = int(gets[sam_path][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(hub.files[sam_path]) // 2, gets
    # The hub file: huggingface_hub's own retry fetched it again (it resumes from its .incomplete file
    # when one with data survives, else restarts); either way one more request and the checked bytes.
    assert len(gets[clip_path]) == 2, gets


def test_a_sam_part_file_left_by_an_earlier_run_is_continued(hub, tmp_path):
    dest = tmp_path / "models"
    data = hub.files[f"/sam/{SAM_FILE}"]
    (dest / "sam").mkdir(parents=True)
    (dest / "sam" / f"{SAM_FILE}.part").write_bytes(data[:1_000_000])
    done = _pull(hub, dest, "--pins", str(_pins(tmp_path / "pins.json", hub)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (dest / "sam" / SAM_FILE).read_bytes() == data
    assert ("GET", f"/sam/{SAM_FILE}", "bytes=1000000-") in hub.requests


def test_unpinned_files_are_refused_with_require_pins_and_recorded_by_update_pins(hub, tmp_path):
    pins = _pins(tmp_path / "pins.json", hub, pinned=False)
    dest = tmp_path / "models"
    refused = _pull(hub, dest, "--pins", str(pins), "--require-pins")
    assert refused.returncode == 1 and "--update-pins" in refused.stderr
    assert not (dest / "clip").exists() and not (dest / "clipseg").exists()
    recorded = _pull(hub, dest, "--pins", str(pins), "--update-pins")
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    written = json.loads(pins.read_text())
    assert written["clip"]["revision"] == written["clipseg"]["revision"] == COMMIT  # what main pointed to
    for name in CLIPSEG_FILES:
        assert (
            written["clipseg"]["files"][name]
            == hashlib.sha256(hub.files[f"/{CLIPSEG_REPO}/resolve/main/{name}"]).hexdigest()
        )
    assert (
        written["clip"]["files"]["open_clip_pytorch_model.bin"]
        == hashlib.sha256((dest / "clip" / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    )
    assert not (dest / "lock.json").exists()  # pinned now: nothing to trust on first use


def _make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target, with the venv's console script run from this checkout."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{target}:"))) + 1
    recipe = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    sam = next(line.split("?=")[1].strip() for line in lines if line.startswith("SAM ?="))
    console = f"{sys.executable} -m worker.cli"
    return [line.replace("$(VENV)/bin/linewatch-worker", console).replace("$(SAM)", sam) for line in recipe]


def _run_line(line: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(shlex.split(line), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _worker_refusal(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`serve` with nothing listening for Kafka or Redis: it must stop at the weights, before either."""
    return _cli(
        {**env, "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "LINEWATCH_REDIS__URL": "redis://127.0.0.1:9/0"},
        "serve",
    )


def test_make_models_pull_needs_no_flag_locks_unpinned_files_and_workers_refuse_a_changed_one(hub, tmp_path):
    """The repository's pins leave CLIP and CLIPSeg null: the first pull trusts what it fetches and locks it."""
    pull_line, check_line = _make_recipe("models-pull")
    assert " models pull " in f"{pull_line} " and check_line.endswith("models check")
    dest = tmp_path / "models"
    pins = _pins(tmp_path / "pins.json", hub, pinned=False)  # SAM pinned (to the test hub's bytes), the rest null
    env = _env(hub, dest, LINEWATCH_MODELS__MODELS_DIR=str(dest), LINEWATCH_MODELS__PINS_FILE=str(pins))
    # IS-Net, as the target's prerequisite `make models` (scripts/fetch_isnet.py) puts it there.
    (dest / "isnet").mkdir(parents=True)
    shutil.copy(REPO / "models" / "isnet" / "isnet.onnx", dest / "isnet" / "isnet.onnx")
    done = _run_line(pull_line, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trusted on first use" in done.stdout
    lock = json.loads((dest / "lock.json").read_text())
    clip_bytes = hub.files[f"/{CLIP_REPO}/resolve/main/open_clip_pytorch_model.bin"]
    assert lock["clip"] == {
        "revision": COMMIT,
        "files": {"open_clip_pytorch_model.bin": hashlib.sha256(clip_bytes).hexdigest()},
    }
    assert set(lock["clipseg"]["files"]) == set(CLIPSEG_FILES) and "sam_vit_b" not in lock  # SAM has its pin

    # A later pull fetches the locked commit, never what `main` points to by then.
    hub.requests.clear()
    again = _run_line(pull_line, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [p for _, p, _ in hub.requests if "/resolve/main/" in p], hub.requests

    # The Makefile's check builds the models, which the test hub's bytes are not: only the digests here.
    check = _run_line(f"{check_line} --no-load", env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("sha256 matches the lock") == 1 + len(CLIPSEG_FILES), check.stdout
    assert check.stdout.count("sha256 matches the pin") == 2, check.stdout  # SAM and IS-Net

    # One changed byte in a locked file and one in a pinned file: check and the worker both refuse, naming each.
    clip_file, sam_file = dest / "clip" / "open_clip_pytorch_model.bin", dest / "sam" / SAM_FILE
    for path in (clip_file, sam_file):
        data = bytearray(path.read_bytes())
        data[1000] ^= 0xFF
        path.write_bytes(bytes(data))
    expected = {
        clip_file: hashlib.sha256(clip_bytes).hexdigest(),
        sam_file: hashlib.sha256(hub.files[f"/sam/{SAM_FILE}"]).hexdigest(),
    }
    tampered = _cli(env, "models", "check", "--no-load")
    refused = _worker_refusal(env)
    assert tampered.returncode == 1 and "MISMATCH" in tampered.stdout, tampered.stdout
    assert refused.returncode == 2 and "cannot start" in refused.stderr, refused.stderr[-3000:]
    for path, digest in expected.items():
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{path}: sha256 {actual}, expected {digest}" in tampered.stdout, tampered.stdout
        assert f"{path}: sha256 {actual}, expected {digest}" in refused.stderr, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
