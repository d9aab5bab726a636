"""models.sam_image_size: SAM's encoder at a smaller input side (sam_input.py), on the tiny SAM (native 256)."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from segment_anything.modeling import image_encoder as sam_image_encoder

from common.settings import LinewatchSettings, ModelSettings
from tests.support.synthetic import make_synthetic_scene
from worker.inspection.models.registry import load_models
from worker.inspection.models.sam import SamGeneratorOptions, build_tiny_sam
from worker.inspection.models.sam_input import encoder_side, resample_pos_embed, set_input_side
from worker.inspection.models.sam_salient import SalientPrompting

OPTIONS = SamGeneratorOptions(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def scene():
    return make_synthetic_scene(seed=3)  # 480x640, three parts on the belt


def _encoder_shapes(proposer) -> list[tuple[tuple, tuple]]:
    """Records (input shape, output shape) of every image-encoder pass of `proposer`."""
    shapes: list[tuple[tuple, tuple]] = []
    proposer.sam.image_encoder.register_forward_hook(
        lambda _module, args, out: shapes.append((tuple(args[0].shape), tuple(out.shape)))
    )
    return shapes


def test_the_native_side_is_a_no_op_with_bit_identical_masks(scene):
    seed_way = build_tiny_sam(CPU, OPTIONS, seed=1234)
    for side in (256, 1024):  # 1024 (the setting's default) is above the tiny model's own side: runs at 256
        native = build_tiny_sam(CPU, OPTIONS, seed=1234, image_size=side)
        assert native.sam.image_encoder.img_size == 256 and native.generator.predictor.transform.target_length == 256
        assert torch.equal(native.sam.image_encoder.pos_embed, seed_way.sam.image_encoder.pos_embed)
        expected, masks = seed_way.propose(scene.image), native.propose(scene.image)
        assert expected and len(masks) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(masks, expected))
    sam = seed_way.sam
    before = sam.image_encoder.pos_embed
    assert set_input_side(sam, 256) is sam and sam.image_encoder.pos_embed is before


@pytest.mark.parametrize("side", [128, 192])
def test_a_smaller_side_gives_frame_sized_masks_from_fewer_tokens(scene, side):
    proposer = build_tiny_sam(CPU, OPTIONS, seed=1234, image_size=side)
    shapes = _encoder_shapes(proposer)
    masks = proposer.propose(scene.image)
    tokens = side // 16
    assert shapes == [((1, 3, side, side), (1, 32, tokens, tokens))]  # (S/16)^2 tokens, not 16x16
    assert proposer.sam.prompt_encoder.get_dense_pe().shape == (1, 32, tokens, tokens)
    assert proposer.generator.predictor.transform.target_length == side
    assert masks and all(mask.shape == (480, 640) and mask.dtype == bool for mask in masks)

    salient = np.logical_or.reduce(scene.object_masks)  # the salient path at the same side
    kept = proposer.propose(scene.image, SalientPrompting(salient, min_coverage=0.0))
    assert 0 < proposer.last_points < proposer.grid_points
    assert kept and all(mask.shape == (480, 640) for mask in kept)


def test_global_attention_rel_pos_tables_are_interpolated_by_segment_anything(scene, monkeypatch):
    proposer = build_tiny_sam(CPU, OPTIONS, seed=1234, image_size=128)
    encoder = proposer.sam.image_encoder
    global_block = encoder.blocks[1].attn  # the tiny model's global-attention block (window 0)
    assert global_block.rel_pos_h.shape[0] == 2 * 16 - 1  # still the native 16-token table
    with torch.no_grad():  # zero-initialised tables would interpolate to zeros: make them count
        for block in encoder.blocks:
            block.attn.rel_pos_h.normal_()
            block.attn.rel_pos_w.normal_()
    calls = []
    real_get_rel_pos = sam_image_encoder.get_rel_pos

    def spy(q_size, k_size, rel_pos):
        out = real_get_rel_pos(q_size, k_size, rel_pos)
        calls.append((q_size, rel_pos.shape[0], tuple(out.shape)))
        return out

    monkeypatch.setattr(sam_image_encoder, "get_rel_pos", spy)
    with torch.inference_mode():
        embedding = encoder(torch.rand(1, 3, 128, 128))
    head_dim = 16
    assert (8, 31, (8, 8, head_dim)) in calls  # global block: a 31-entry table read for an 8-token grid
    assert (4, 7, (4, 4, head_dim)) in calls  # windowed block: 4x4 windows, its table as it is
    assert embedding.shape == (1, 32, 8, 8) and torch.isfinite(embedding).all()


def test_resampling_the_position_embedding_keeps_its_shape_over_the_grid():
    ramp = torch.linspace(-1.0, 1.0, 64).reshape(1, 1, 64, 1).expand(1, 64, 64, 3).contiguous()
    resized = resample_pos_embed(ramp, 40)
    assert resized.shape == (1, 40, 40, 3) and resized.dtype == ramp.dtype
    row = resized[0, 0, :, 0]
    assert torch.all(row[1:] > row[:-1])  # still increasing left to right
    assert torch.allclose(resized[0, :, :, 0], resized[0, :1, :, 0].expand(40, 40))  # still constant down
    assert row[0] == pytest.approx(-1.0, abs=0.03) and row[-1] == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("side", [1000, 64, 2048, 0])
def test_a_bad_setting_is_refused_with_what_is_allowed(side):
    with pytest.raises(ValidationError, match="multiple of 64 from 128 to 1024"):
        ModelSettings(sam_image_size=side)


@pytest.mark.parametrize(("side", "message"), [(200, "multiple of its patch size 16"), (512, "its own side 256")])
def test_a_side_the_model_cannot_take_is_refused(side, message):
    sam = build_tiny_sam(CPU, OPTIONS, seed=1234).sam
    with pytest.raises(ValueError, match=message):
        set_input_side(sam, side)
    assert encoder_side(sam) == 256  # refused before anything changed


def test_the_bench_flag_is_validated_like_the_setting(capsys):
    from worker.bench.cli import run_bench_command
    from worker.cli import build_parser

    args = build_parser().parse_args(["bench", "--profile", "tiny", "--sam-image-size", "1000"])
    assert run_bench_command(args, LinewatchSettings()) == 2
    assert "multiple of 64 from 128 to 1024" in capsys.readouterr().err


@pytest.mark.models  # auto forced to fp32 and bf16 too (make test-precisions)
def test_the_registry_runs_sam_at_the_configured_side():
    small = load_models(ModelSettings(profile="tiny", foreground="sam+isnet", sam_image_size=192))
    default = load_models(ModelSettings(profile="tiny", foreground="sam+isnet"))
    assert small.sam.sam.image_encoder.img_size == 192 and small.sam.generator.predictor.transform.target_length == 192
    assert default.sam.sam.image_encoder.img_size == 256  # 1024 is above the tiny model's own side
    assert small.fingerprints["sam"] != default.fingerprints["sam"]  # results and caches say which ran
