"""The pins of real weights: one file, well formed, and rewritten faithfully by --update-pins."""

from __future__ import annotations

import hashlib
import re

import pytest

from worker.inspection.models.catalog import PINS_FILE, load_catalog, save_catalog, sources_for
from worker.inspection.models.download import DigestMismatch, md5_prefix_in_name, verify
from worker.inspection.models.offline import downloads_allowed, stay_offline

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def test_pins_cover_every_model_pull_fetches():
    catalog = load_catalog()
    for sam in ("vit_b", "vit_l", "vit_h"):
        keys = [source.key for source in sources_for(catalog, sam)]
        assert keys == ["clip", "clipseg", f"sam_{sam}"]
    assert catalog["clip"].repo == "timm/vit_base_patch16_plus_clip_240.laion400m_e31"  # what laion400m_e32 points to
    assert "tokenizer.json" not in catalog["clipseg"].files and {"vocab.json", "merges.txt"} <= set(
        catalog["clipseg"].files
    )
    for source in catalog.values():
        assert source.size_mb > 0
        for name, digest in source.files.items():
            assert digest is None or HEX64.match(digest), (source.key, name)
    for sam in ("vit_b", "vit_l", "vit_h"):  # Meta's names carry an md5 prefix; their sha256 is pinned
        ((name, digest),) = catalog[f"sam_{sam}"].files.items()
        assert md5_prefix_in_name(name) is not None and digest is not None


def test_open_clip_still_maps_the_tag_to_the_pinned_repository():
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg("ViT-B-16-plus-240", "laion400m_e32")
    assert cfg["hf_hub"].strip("/") == load_catalog()["clip"].repo


def test_save_catalog_round_trips_recorded_pins(tmp_path):
    path = tmp_path / "pins.json"
    path.write_text(PINS_FILE.read_text())
    catalog = load_catalog(path)
    catalog["clipseg"] = catalog["clipseg"].with_pins("a" * 40, {"config.json": "b" * 64})
    save_catalog(catalog, path)
    again = load_catalog(path)
    assert again["clipseg"].revision == "a" * 40 and again["clipseg"].files["config.json"] == "b" * 64
    assert again["sam_vit_b"] == catalog["sam_vit_b"] and again["clip"] == catalog["clip"]


def test_verify_deletes_a_mismatching_file_and_names_both_digests(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"not the pinned bytes")
    with pytest.raises(DigestMismatch) as caught:
        verify(path, "0" * 64, "weights.bin")
    actual = hashlib.sha256(b"not the pinned bytes").hexdigest()
    assert "0" * 64 in str(caught.value) and actual in str(caught.value) and not path.exists()


def test_the_hub_stays_offline_outside_an_explicit_download():
    import huggingface_hub.constants as constants

    stay_offline()
    assert constants.HF_HUB_OFFLINE
    with downloads_allowed():
        assert not constants.HF_HUB_OFFLINE
    assert constants.HF_HUB_OFFLINE
