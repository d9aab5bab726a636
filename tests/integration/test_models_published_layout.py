"""The default profile on files written exactly as they are published, with random weights.

CLIP as open_clip's hub files (`open_clip_model.safetensors`, `open_clip_pytorch_model.bin`) and as a
release-style `{"state_dict": {"module.…"}}` file; CLIPSeg via `save_pretrained` plus the tokenizer
files CIDAS ships (vocab.json + merges.txt, no tokenizer.json); SAM's plain state dict named as Meta
names it, `sam_vit_b_<md5 prefix>.pth` (not Meta's own name, whose sha256 is pinned: random weights
under that name are refused, which the first test checks too). Every tensor loaded must equal the
tensor written.

The loader code is the production one; to stay within CI time the CLIP and CLIPSeg architectures
are smaller real ones (open_clip `ViT-S-32`, a 4-layer CLIPSeg) unless LINEWATCH_FULL_DEFAULT=1,
which writes the full ViT-B-16-plus-240, CLIPSeg rd64 and SAM vit_b.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from segment_anything import sam_model_registry
from transformers import CLIPSegForImageSegmentation

from common.settings import ModelSettings
from worker.inspection.models.integrity import WeightsMismatch
from worker.inspection.models.isnet import sha256_file
from worker.inspection.models.registry import base_clipseg_config, load_models, tiny_clipseg_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ISNET = Path(
    os.environ.get("LINEWATCH_TEST_ISNET", REPO / "models" / "isnet" / "isnet.onnx")
)  # `make models` puts it there
FULL = os.environ.get("LINEWATCH_FULL_DEFAULT") == "1"
CLIP_MODEL = "ViT-B-16-plus-240" if FULL else "ViT-S-32"
RELEASE_NAME = "vit_b_16_plus_240-laion400m_e32-699c4b84.pt"
SAM_NAME = "sam_vit_b_0a1b2c.pth"
PINNED_SAM_NAME = "sam_vit_b_01ec64.pth"  # Meta's file: its sha256 is in pins.json
# Tokenizer files as CIDAS/clipseg-rd64-refined ships them (their content, not their bytes).
SPECIAL = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
TOKENIZER_CONFIG = {
    **SPECIAL,
    "add_prefix_space": False,
    "do_lower_case": True,
    "errors": "replace",
    "model_max_length": 77,
    "tokenizer_class": "CLIPTokenizer",
}
PREPROCESSOR_CONFIG = {
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "processor_class": "CLIPSegProcessor",
    "resample": 2,
    "size": 352,
}


def write_clip_bpe_files(folder: Path) -> None:
    """vocab.json + merges.txt of CLIP's BPE, built from the vocabulary open_clip bundles (the same one)."""
    bpe = gzip.open(open_clip.tokenizer.default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    encoder = dict(open_clip.SimpleTokenizer().encoder)
    encoder["<|startoftext|>"] = encoder.pop("<start_of_text>")
    encoder["<|endoftext|>"] = encoder.pop("<end_of_text>")
    (folder / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(bpe) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL))
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG))


def cloned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def assert_same_tensors(loaded: dict[str, torch.Tensor], written: dict[str, torch.Tensor], what: str) -> None:
    assert set(loaded) == set(written), f"{what}: keys differ: {sorted(set(loaded) ^ set(written))[:5]}"
    unequal = [key for key in written if not torch.equal(loaded[key].cpu(), written[key])]
    assert not unequal, f"{what}: {len(unequal)} tensors differ, e.g. {unequal[:3]}"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    if not ISNET.is_file():
        pytest.fail(f"{ISNET} is missing: run `make models` first (CI does)")
    started = time.perf_counter()
    models = tmp_path_factory.mktemp("published") / "models"
    (models / "clip").mkdir(parents=True)
    (models / "sam").mkdir()
    (models / "isnet").mkdir()
    shutil.copy(ISNET, models / "isnet" / "isnet.onnx")
    torch.manual_seed(7)
    clip = cloned(open_clip.create_model(CLIP_MODEL).state_dict())
    save_file(clip, str(models / "clip" / "open_clip_model.safetensors"))
    torch.save(clip, models / "clip" / "open_clip_pytorch_model.bin")
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in clip.items()}}, models / RELEASE_NAME)
    clipseg = CLIPSegForImageSegmentation(base_clipseg_config() if FULL else tiny_clipseg_config())
    clipseg.save_pretrained(models / "clipseg")
    write_clip_bpe_files(models / "clipseg")
    sam = cloned(sam_model_registry["vit_b"](checkpoint=None).state_dict())
    torch.save(sam, models / "sam" / SAM_NAME)
    written = {"clip": clip, "clipseg": cloned(clipseg.state_dict()), "sam": sam}
    print(f"\nwrote the published layout ({CLIP_MODEL}) in {time.perf_counter() - started:.1f} s")
    return models, written


def default_settings(models: Path, **updates) -> ModelSettings:
    return ModelSettings(profile="default", device="cpu", models_dir=models, clip_model=CLIP_MODEL, **updates)


def test_default_profile_loads_every_published_layout_bit_for_bit(published):
    models, written = published
    # Other bytes under a pinned name: refused before anything is built, naming the file and both digests.
    sam_file = models / "sam" / SAM_NAME
    sam_file.rename(models / "sam" / PINNED_SAM_NAME)
    try:
        with pytest.raises(
            WeightsMismatch, match=rf"{PINNED_SAM_NAME}: sha256 [0-9a-f]{{64}}, expected [0-9a-f]{{64}}"
        ):
            load_models(default_settings(models))
    finally:
        (models / "sam" / PINNED_SAM_NAME).rename(sam_file)
    started = time.perf_counter()
    bundle = load_models(default_settings(models))
    print(f"default profile loaded in {time.perf_counter() - started:.1f} s")
    assert bundle.profile == "default" and set(bundle.fingerprints) == {"clip", "clipseg", "sam", "isnet"}
    assert_same_tensors(bundle.clip.model.state_dict(), written["clip"], "CLIP open_clip_model.safetensors")
    assert_same_tensors(bundle.clipseg.model.state_dict(), written["clipseg"], "CLIPSeg model.safetensors")
    assert_same_tensors(bundle.sam.sam.state_dict(), written["sam"], SAM_NAME)
    assert bundle.isnet.fingerprint == sha256_file(models / "isnet" / "isnet.onnx")
    # The tokenizer built from CIDAS-style files (no tokenizer.json) is CLIP's BPE: same ids as open_clip.
    ids, _ = bundle.clipseg.tokens(["a photo of a scratched screw"])
    reference = open_clip.SimpleTokenizer()(["a photo of a scratched screw"])[0]
    assert ids[0].tolist() == reference[: ids.shape[1]].tolist()

    # The other two CLIP layouts: the hub's .bin, then the release file named by the setting.
    clip_folder = models / "clip"
    (clip_folder / "open_clip_model.safetensors").rename(models / "set-aside.safetensors")
    try:
        bin_bundle = load_models(default_settings(models, foreground="none"))
        assert_same_tensors(bin_bundle.clip.model.state_dict(), written["clip"], "CLIP open_clip_pytorch_model.bin")
        release = load_models(default_settings(models, foreground="none", clip_pretrained=str(models / RELEASE_NAME)))
        assert_same_tensors(release.clip.model.state_dict(), written["clip"], f"CLIP {RELEASE_NAME}")
        assert bin_bundle.fingerprints["clip"] == release.fingerprints["clip"] == bundle.fingerprints["clip"]
    finally:
        (models / "set-aside.safetensors").rename(clip_folder / "open_clip_model.safetensors")

    # CLIPSeg as pytorch_model.bin (what CIDAS uploaded first) instead of model.safetensors.
    seg_folder = models / "clipseg"
    torch.save(written["clipseg"], seg_folder / "pytorch_model.bin")
    (seg_folder / "model.safetensors").rename(models / "set-aside-seg.safetensors")
    try:
        seg_bin = load_models(default_settings(models, foreground="none"))
        assert_same_tensors(seg_bin.clipseg.model.state_dict(), written["clipseg"], "CLIPSeg pytorch_model.bin")
    finally:
        (seg_folder / "pytorch_model.bin").unlink()
        (models / "set-aside-seg.safetensors").rename(seg_folder / "model.safetensors")


def _frame(path: Path) -> Path:
    rng = np.random.default_rng(3)
    image = np.full((240, 320, 3), 40, np.uint8)
    image[60:180, 100:220] = rng.integers(120, 220, (120, 120, 3), dtype=np.uint8)  # one object on a plain belt
    Image.fromarray(image).save(path)
    return path


def _cli_env(models: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEWATCH_", "HF_", "TRANSFORMERS_"))}
    env.update(
        LINEWATCH_MODELS__MODELS_DIR=str(models),
        LINEWATCH_MODELS__CLIP_MODEL=CLIP_MODEL,
        LINEWATCH_MODELS__DEVICE="cpu",
        HF_HOME=str(models.parent / "hf-home"),  # an empty hub cache: nothing can come from there
        **extra,
    )
    return env


def test_inspect_with_the_default_profile_end_to_end(published, tmp_path):
    models, written = published
    started = time.perf_counter()
    done = subprocess.run(
        # SAM is loaded (and checked bit for bit) above; its 1024-point grid on 2 CPU cores takes ~7 min
        # with random weights, so this run uses the IS-Net foreground. LINEWATCH_FULL_DEFAULT=1 keeps SAM.
        [
            sys.executable,
            "-m",
            "worker.cli",
            "inspect",
            "--profile",
            "default",
            "--object",
            "screw",
            "--foreground",
            "sam+isnet" if FULL else "isnet",
            str(_frame(tmp_path / "frame.png")),
        ],
        cwd=REPO,
        env=_cli_env(models),
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(f"`linewatch-worker inspect --profile default` took {time.perf_counter() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["versions"]["profile"] == "default" and result["versions"]["model_fingerprint"].startswith("default-")
    assert 0.0 <= result["raw_score"] <= 1.0 and result["verdict"] in {"ok", "anomalous"}
    # The tile temperature defaults to the checkpoint's own logit scale, and results say which was used.
    expected = float(written["clip"]["logit_scale"].exp())
    assert result["versions"]["tile_temperature"] == pytest.approx(expected, rel=1e-6)


def test_models_check_reports_real_files_and_loads(published):
    models, _ = published
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "models", "check"],
        cwd=REPO,
        env=_cli_env(models),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.startswith("  ")}
    assert lines["clip"][1] == "real" and lines["clip"][3].endswith("open_clip_model.safetensors")
    assert lines["clipseg"][1] == "real" and lines["sam"][3].endswith(SAM_NAME)
    assert all(len(lines[m][2]) == 16 for m in ("clip", "clipseg", "sam"))  # module fingerprints
    assert "profile default loads: fingerprint default-" in done.stdout


GUARD = r"""
import socket, sys, urllib.request
attempts = []
def refuse(kind):
    def guard(*args, **kwargs):
        attempts.append((kind, repr(args)[:200]))
        raise OSError(f"network connection attempted: {kind} {args!r}"[:300])
    return guard
real_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        return refuse("socket.connect")(address)
    return real_connect(self, address)
socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: connect(self, address)
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")

# Only now the project code: import-time behaviour is covered too.
import numpy as np
from common.settings import LinewatchSettings
from worker.inspection.inspector import Inspector
from worker.inspection.models.registry import load_models
from worker.inspection.types import Frame

settings = LinewatchSettings().models  # from the environment: profile default, SAM + IS-Net
bundle = load_models(settings)
assert bundle.profile == "default" and bundle.sam is not None and bundle.isnet is not None
# Inspect a frame too (text towers, tokenizer, caches); SAM's 1024-point grid is left out for time.
bundle.sam = None
lighter = settings.model_copy(update={"foreground": "isnet"})
image = np.full((240, 320, 3), 40, np.uint8); image[60:180, 100:220] = 200
Inspector(bundle, lighter).inspect([Frame("f1", image, "screw")])
print("ATTEMPTS_DURING_LOAD", len(attempts), attempts)
try:  # the guard itself must work, or the test proves nothing
    urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)
except OSError:
    pass
print("GUARD_CAUGHT", len(attempts))
"""


def test_no_network_connection_is_attempted_while_the_default_profile_loads(published):
    models, _ = published
    # No HF_HUB_OFFLINE in the environment: the project must switch the hub offline itself.
    env = _cli_env(models, LINEWATCH_MODELS__PROFILE="default", HF_ENDPOINT="http://hub.invalid")
    done = subprocess.run([sys.executable, "-c", GUARD], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ATTEMPTS_DURING_LOAD 0 []" in done.stdout, done.stdout
    assert "GUARD_CAUGHT 1" in done.stdout, done.stdout
