"""Tiny random-weight models of the real architectures: mechanics, shapes, fingerprints."""

import pytest
import torch

from common.settings import ModelSettings
from tests.support.hardware import needs_cpu_bf16
from worker.inspection.models.clipseg import build_clipseg_random
from worker.inspection.models.registry import load_models, tiny_clipseg_config
from worker.inspection.models.weights import ModelWeightsMissing, load_state_dict


@pytest.fixture(scope="module")
def tiny():
    # fp32 pinned: these tests compare against the fp32 weights (`auto` may pick bf16 on this CPU)
    return load_models(ModelSettings(profile="tiny", foreground="none", precision="fp32"))


def test_clip_embeddings_are_unit_vectors(tiny):
    images = torch.rand(3, 3, tiny.clip.normalisation.size, tiny.clip.normalisation.size)
    image_emb = tiny.clip.encode_images(images)
    text_emb = tiny.clip.encode_texts(["a photo of a screw.", "a photo of a damaged screw."])
    assert image_emb.shape == (3, 32) and text_emb.shape == (2, 32)
    assert torch.allclose(image_emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_clipseg_shared_vision_pass_equals_full_model_per_prompt(tiny):
    images = torch.rand(2, 3, 352, 352)
    prompts = ["a crack", "a scratch", "a dent", "a hole", "a stain"]  # 10 pairs: two decoder calls on a CPU
    before = tiny.clipseg.vision_forward_images
    fast = tiny.clipseg.segment(images, tiny.clipseg.encode_texts(prompts))
    assert tiny.clipseg.vision_forward_images - before == 2  # once per tile, not per (tile, prompt)
    trunk = tiny.clipseg._segment_modules[0]  # and only up to the deepest layer the decoder reads
    assert len(trunk.encoder.layers) == 3 < len(tiny.clipseg.model.clip.vision_model.encoder.layers)
    assert (
        trunk.encoder.layers[0].mlp.fc1.weight is tiny.clipseg.model.clip.vision_model.encoder.layers[0].mlp.fc1.weight
    )
    slow = tiny.clipseg.segment_naive(images, prompts)
    assert fast.shape == slow.shape == (2, 5, 352, 352)
    assert torch.allclose(fast, slow, atol=1e-4)  # batching changes float summation order only


@needs_cpu_bf16
def test_clipseg_shared_vision_pass_in_bf16_runs_a_converted_trunk_and_keeps_the_maps(tiny):
    bf16 = load_models(ModelSettings(profile="tiny", foreground="none", precision="bf16"))
    assert bf16.precision == "bf16"
    trunk = bf16.clipseg._segment_modules[0]
    assert trunk.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16  # a converted copy ...
    assert (
        bf16.clipseg.model.clip.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.float32
    )  # ... beside fp32
    images = torch.rand(2, 3, 352, 352)
    prompts = ["a crack", "a scratch", "a dent"]
    fast = bf16.clipseg.segment(images, bf16.clipseg.encode_texts(prompts))
    slow = bf16.clipseg.segment_naive(images, prompts)  # autocast over the fp32 weights
    exact = tiny.clipseg.segment(images, tiny.clipseg.encode_texts(prompts))
    assert fast.shape == slow.shape == exact.shape == (2, 3, 352, 352)
    # bf16 keeps 8 bits of mantissa: on average the probabilities move by a few thousandths (0.002 on
    # an AMX Xeon; pixels on the 0.5 edge of a random model's sharp logits move more), and they do move
    assert (fast - exact).abs().mean() < 0.01 and (slow - exact).abs().mean() < 0.01
    assert (fast - slow).abs().mean() < 0.01 and not torch.equal(fast, exact)


@pytest.mark.models  # auto forced to fp32 and bf16 too (make test-precisions)
def test_fingerprint_is_stable_and_weight_sensitive(tiny):
    again = load_models(ModelSettings(profile="tiny", foreground="none"))
    assert again.fingerprint == tiny.fingerprint and again.fingerprint.startswith("tiny-")
    with torch.no_grad():
        next(again.clipseg.model.parameters()).add_(1e-3)
    from worker.inspection.models.weights import fingerprint_module

    assert fingerprint_module("clipseg", again.clipseg.model) != tiny.fingerprints["clipseg"]


def test_default_profile_without_weights_names_every_missing_file(tmp_path):
    settings = ModelSettings(
        profile="default", models_dir=tmp_path, clipseg_model=str(tmp_path / "nope"), clip_pretrained="laion400m_e32"
    )
    with pytest.raises(ModelWeightsMissing) as error:
        load_models(settings)
    message = str(error.value)
    for expected in ("CLIP ViT-B-16-plus-240", f"{tmp_path}/clipseg", f"{tmp_path}/sam/", "IS-Net", "make models"):
        assert expected in message
    assert "--profile tiny" in message  # suggested, never silently used


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        load_models(ModelSettings.model_construct(profile="huge", device="cpu", foreground="none"))


def test_checkpoints_load_without_pickle_execution(tmp_path):
    model = build_clipseg_random(tiny_clipseg_config(), torch.device("cpu"), seed=1).model
    safe = tmp_path / "clipseg.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(safe))
    assert set(load_state_dict(safe)) == set(model.state_dict())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"weights": Evil()}, evil)
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_state_dict(evil)


@pytest.mark.models  # auto forced to fp32 and bf16 too (make test-precisions)
def test_demo_profile_sees_a_tile_in_8px_patches_with_no_positional_offsets(tiny):
    from common.settings import PROFILE_NAMES
    from worker.inspection.models.registry import PROFILES

    assert set(PROFILES) == set(PROFILE_NAMES)  # every profile a CLI offers can be built
    demo = load_models(ModelSettings(profile="demo", foreground="none"))
    assert demo.profile == "demo" and demo.fingerprint != tiny.fingerprint
    assert demo.clip.normalisation.size == 224 and demo.clip.patch_grid == 28
    assert not demo.clip.model.visual.positional_embedding.any()
    # without positional offsets, two tiles that show the same uniform surface give the same
    # patch features at every place: a reference patch matches wherever the part lies
    flat = torch.full((1, 3, 224, 224), 0.4)
    _, patches = demo.clip.encode_images_with_patches(flat, (-1,))
    assert patches.shape == (1, 1, 28 * 28, 64)
    assert torch.allclose(patches[0, 0], patches[0, 0, :1].expand_as(patches[0, 0]), atol=1e-5)
    _, tiny_patches = tiny.clip.encode_images_with_patches(torch.full((1, 3, 64, 64), 0.4), (-1,))
    assert not torch.allclose(tiny_patches[0, 0], tiny_patches[0, 0, :1].expand_as(tiny_patches[0, 0]), atol=1e-3)
