"""models.precision: the `auto` choice is a pure function of the device type and the hardware flags."""

import numpy as np
import pytest
import torch

from common.settings import ModelSettings
from tests.support.hardware import needs_cpu_bf16
from worker.inspection.models.precision import bf16_matmul_speedup, choose_precision, cpu_flags, needs_bf16_timing
from worker.inspection.models.registry import load_models


@pytest.mark.parametrize(
    ("device", "flags", "cuda_bf16", "speedup", "expected"),
    [
        ("cpu", {"avx2", "amx_bf16", "amx_tile"}, False, None, "bf16"),
        ("cpu", {"avx512f", "avx512_bf16"}, False, 0.57, "fp32"),  # a virtual Xeon hiding its AMX: bf16 slower
        ("cpu", {"avx512f", "avx512_bf16"}, False, 4.5, "bf16"),  # a virtual AMD EPYC: bf16 4.5x fp32
        ("cpu", {"avx512f", "avx512_bf16"}, False, None, "fp32"),  # not timed
        ("cpu", {"avx2", "avx512f"}, False, None, "fp32"),
        ("cpu", set(), False, None, "fp32"),
        ("cuda", set(), True, None, "bf16"),
        ("cuda", {"amx_bf16"}, False, None, "fp32"),  # a V100/T4: the host CPU's flags do not matter
        ("mps", {"amx_bf16"}, False, None, "fp32"),
    ],
)
def test_auto_picks_bf16_only_where_the_hardware_has_it(device, flags, cuda_bf16, speedup, expected):
    assert choose_precision("auto", device, flags, cuda_bf16, speedup) == expected


@pytest.mark.models  # auto forced to fp32 and bf16 too (make test-precisions)
def test_auto_resolves_as_this_run_asks(request):
    """`--auto-precision` (tests/conftest.py) makes `auto` answer fp32 or bf16 on any CPU, so that
    `make test` can run the model tests under both answers whatever CPU it is on."""
    forced = request.config.getoption("--auto-precision")
    if forced == "hardware":
        pytest.skip("this run leaves models.precision=auto to the CPU (make test runs the other answer too)")
    bundle = load_models(ModelSettings(profile="tiny", foreground="none", device="cpu"))
    assert bundle.precision == forced


def test_bf16_is_timed_only_on_a_cpu_whose_flags_do_not_tell():
    assert needs_bf16_timing("auto", "cpu", {"avx512f", "avx512_bf16"})
    assert not needs_bf16_timing("auto", "cpu", {"avx512_bf16", "amx_bf16"})  # AMX: bf16 without asking
    assert not needs_bf16_timing("auto", "cpu", {"avx2"})  # no bf16 instructions at all
    assert not needs_bf16_timing("fp32", "cpu", {"avx512_bf16"}) and not needs_bf16_timing(
        "auto", "cuda", {"avx512_bf16"}
    )
    speedup = bf16_matmul_speedup(side=256, repeats=1)
    assert isinstance(speedup, float) and speedup > 0.0


def test_explicit_settings_are_kept_and_fp16_on_cpu_is_refused():
    assert choose_precision("fp32", "cuda", set(), True) == "fp32"
    assert choose_precision("bf16", "cpu", set()) == "bf16"
    assert choose_precision("fp16", "cuda", set(), False) == "fp16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        choose_precision("fp16", "cpu", {"amx_bf16"})
    assert choose_precision("int8", "cpu", {"avx512_vnni"}) == "int8"
    # a CPU without oneDNN's bf16 kernels: auto stays fp32 and bf16 is refused before the first frame fails
    assert choose_precision("auto", "cpu", {"amx_bf16"}, cpu_bf16_kernels=False) == "fp32"
    with pytest.raises(ValueError, match="bf16 needs a CPU with bf16 kernels"):
        choose_precision("bf16", "cpu", set(), cpu_bf16_kernels=False)
    assert choose_precision("bf16", "cuda", set(), True, cpu_bf16_kernels=False) == "bf16"  # a CPU fact only
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        choose_precision("int8", "cuda", set(), True)


def test_auto_never_picks_int8():
    flags = {"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
    assert all(choose_precision("auto", device, flags, True) != "int8" for device in ("cpu", "cuda"))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n\nprocessor\t: 1\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@needs_cpu_bf16
def test_bundle_models_run_in_the_chosen_precision():
    bundle = load_models(ModelSettings(profile="tiny", foreground="none", precision="bf16"))
    assert bundle.precision == bundle.clip.precision == bundle.clipseg.precision == "bf16"
    images = torch.rand(2, 3, bundle.clip.normalisation.size, bundle.clip.normalisation.size)
    half = bundle.clip.encode_images(images)
    bundle.clip.precision = "fp32"
    full = bundle.clip.encode_images(images)
    assert half.dtype == torch.float32  # outputs stay fp32 for the numpy stages
    deviation = (half - full).abs().max().item()
    assert 0.0 < deviation < 0.05  # bf16 really ran, and stayed close
    # CLIPSeg's vision tower and decoder run on their bf16 copy the same way
    tiles = torch.rand(2, 3, bundle.clipseg.size, bundle.clipseg.size)
    prompts = bundle.clipseg.encode_texts(["a photo of a damaged object.", "a photo of a scratch."])
    half_maps = bundle.clipseg.segment(tiles, prompts)
    trunk, decoder = bundle.clipseg._segment_modules
    assert trunk.embeddings.patch_embedding.weight.dtype == decoder.film_mul.weight.dtype == torch.bfloat16
    bundle.clipseg.precision = "fp32"
    fp32_decoder = bundle.clipseg._segment_modules[1]
    assert fp32_decoder.film_mul.weight is bundle.clipseg.model.decoder.film_mul.weight  # the fp32 weights, shared
    full_maps = bundle.clipseg.segment(tiles, prompts)
    side = bundle.clipseg.size
    assert half_maps.dtype == torch.float32 and half_maps.shape == full_maps.shape == (2, 2, side, side)
    # random weights saturate the sigmoid, so a few pixels near 0.5 may flip; nearly all stay put
    moved = (half_maps - full_maps).abs()
    assert moved.max().item() > 0.0 and (moved > 0.05).float().mean().item() < 0.02


def test_isnet_runs_on_the_workers_gpu_or_on_the_cpu():
    from worker.inspection.models.isnet import providers_for

    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", 1, gpu_build) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers_for("cuda", None, gpu_build)[0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert providers_for("cpu", None, gpu_build) == ["CPUExecutionProvider"]  # a CPU worker never takes a GPU
    assert providers_for("cuda", 0, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]  # CPU build installed


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=needs_cpu_bf16), "int8"])
def test_the_few_shot_pass_runs_in_the_same_precision_as_the_tile_embedding(precision):
    clip = load_models(ModelSettings(profile="tiny", foreground="none", precision=precision)).clip
    images = torch.rand(2, 3, clip.normalisation.size, clip.normalisation.size)
    embeddings, patches = clip.encode_images_with_patches(images, (-1,))
    assert torch.equal(embeddings, clip.encode_images(images))  # a bank never changes the tile score
    assert patches.shape[:2] == (2, 1) and patches.dtype == torch.float32


@needs_cpu_bf16
def test_sam_runs_a_converted_copy_and_switches_back_to_its_fp32_weights():
    from tests.support.synthetic import make_synthetic_scene

    bundle = load_models(ModelSettings(profile="tiny", foreground="sam+isnet", precision="bf16"))
    sam = bundle.sam
    running = sam.generator.predictor.model
    assert running is not sam.sam and running.prompt_encoder is sam.sam.prompt_encoder  # the small part is shared
    assert running.image_encoder.module.patch_embed.proj.weight.dtype == torch.bfloat16
    assert running.mask_decoder.module.decoder.iou_token.weight.dtype == torch.bfloat16
    assert sam.sam.image_encoder.patch_embed.proj.weight.dtype == torch.float32  # the fingerprinted weights
    image = make_synthetic_scene(seed=2, n_objects=3).image
    half = sam.propose(image)
    sam.precision = "fp32"
    running = sam.generator.predictor.model  # in fp32: sam's own modules, no copies
    assert running.image_encoder is sam.sam.image_encoder and running.mask_decoder.decoder is sam.sam.mask_decoder
    full = sam.propose(image)
    assert half and full and all(mask.dtype == bool and mask.shape == image.shape[:2] for mask in half)
    union_half, union_full = np.logical_or.reduce(half), np.logical_or.reduce(full)
    assert (union_half & union_full).sum() / (union_half | union_full).sum() > 0.9  # 0.99 on this frame


def _quantised(module: torch.nn.Module) -> int:
    """The dynamic int8 Linear layers in `module`."""
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    return sum(isinstance(m, Int8Linear) for m in module.modules())


def test_int8_quantises_the_towers_keeps_the_decoders_float_and_switches_back_exactly():
    from tests.support.synthetic import make_synthetic_scene

    bundle = load_models(ModelSettings(profile="tiny", foreground="sam+isnet", precision="int8"))
    fp32 = load_models(ModelSettings(profile="tiny", foreground="sam+isnet", precision="fp32"))
    clip, clipseg, sam = bundle.clip, bundle.clipseg, bundle.sam
    assert bundle.precision == clip.precision == clipseg.precision == sam.precision == "int8"
    # CLIP's image tower: every MLP Linear is int8 (attention's fused in-projection is not an nn.Linear)
    assert _quantised(clip._visual_half) >= 2 * len(clip.model.visual.transformer.resblocks)
    assert _quantised(clip.model) == 0  # the fp32 weights stay: fingerprint, text tower, switch back
    images = torch.rand(2, 3, clip.normalisation.size, clip.normalisation.size)
    quantised, exact = clip.encode_images(images), fp32.clip.encode_images(images)
    assert quantised.dtype == torch.float32
    assert 0.0 < (quantised - exact).abs().max().item() and (quantised * exact).sum(1).min().item() > 0.99
    # CLIPSeg: the vision trunk is int8, the decoder its own fp32 module
    trunk, decoder = clipseg._segment_modules
    assert _quantised(trunk) >= 4 * len(trunk.encoder.layers) and _quantised(decoder) == 0
    assert decoder.film_mul.weight is clipseg.model.decoder.film_mul.weight
    tiles = torch.rand(2, 3, clipseg.size, clipseg.size)
    prompts = clipseg.encode_texts(["a photo of a damaged object.", "a photo of a scratch."])
    moved = (clipseg.segment(tiles, prompts) - fp32.clipseg.segment(tiles, prompts)).abs()
    assert moved.max().item() > 0.0 and (moved > 0.05).float().mean().item() < 0.02
    # SAM: the encoder and the mask decoder are int8 copies; the prompt encoder and sam.sam stay fp32
    running = sam.generator.predictor.model
    assert _quantised(running.image_encoder) > 0 and _quantised(running.mask_decoder) > 0
    assert _quantised(sam.sam) == 0 and running.prompt_encoder is sam.sam.prompt_encoder
    image = make_synthetic_scene(seed=2, n_objects=3).image
    assert sam.propose(image)
    # switching back runs the fp32 weights again, bit for bit
    bundle.clip.precision = bundle.clipseg.precision = "fp32"
    assert torch.equal(bundle.clip.encode_images(images), exact)
    assert torch.equal(bundle.clipseg.segment(tiles, prompts), fp32.clipseg.segment(tiles, prompts))


@pytest.mark.models  # auto forced to fp32 and bf16 too (make test-precisions)
def test_precision_defaults_to_auto_so_bench_without_a_flag_runs_bf16_on_an_amx_cpu(monkeypatch, capsys):
    """`bench --foreground isnet` with no --precision: the setting's default, auto, picks bf16 on AMX-BF16.

    The bench's models are built through the real command line; only the timed run is left out (bf16
    kernels need a CPU that has them, and this one may not)."""
    import json

    from worker import cli
    from worker.bench import inprocess
    from worker.inspection.models import precision

    def build_only(settings, *_args):
        return {"precision": load_models(settings).precision, "setting": settings.precision}

    assert ModelSettings().precision == "auto"
    monkeypatch.delenv("LINEWATCH_MODELS__PRECISION", raising=False)
    monkeypatch.setattr(inprocess, "run_bench", build_only)
    for flags, expected in (({"avx2", "amx_tile", "amx_bf16"}, "bf16"), ({"avx2"}, "fp32")):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: frozenset(flags))
        monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: True)  # what an AMX CPU answers
        assert cli.main(["bench", "--profile", "tiny", "--foreground", "isnet", "--device", "cpu"]) == 0
        assert json.loads(capsys.readouterr().out) == {"precision": expected, "setting": "auto"}
