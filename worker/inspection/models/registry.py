"""Model profiles: which CLIP, CLIPSeg, SAM and IS-Net a worker runs.

- default: the real pretrained weights (WinCLIP's CLIP, CIDAS CLIPSeg, SAM, IS-Net),
  loaded from local files or the Hugging Face cache. Missing weights are an error.
- base:    the same architectures with random weights, so benchmarks pay the real cost.
- tiny:    few-layer random versions of the same architectures, for tests.
- demo:    tiny, but a CLIP that sees each tile at 224 px in 8 px patches, for `make demo`'s reference bank.

Random profiles are only ever chosen explicitly; they say so in the fingerprint and profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers import CLIPSegConfig

from common.settings import ModelSettings
from worker.inspection.models import locate
from worker.inspection.models.clip import ClipModel, build_open_clip
from worker.inspection.models.clipseg import ClipSegModel, build_clipseg_random, load_clipseg_folder
from worker.inspection.models.integrity import require_intact
from worker.inspection.models.precision import HALF_PRECISIONS, Precision, resolve_precision
from worker.inspection.models.sam import (
    SamGeneratorOptions,
    SamMaskProposer,
    build_sam_random,
    build_tiny_sam,
    load_sam,
)
from worker.inspection.models.weights import (
    ModelWeightsMissing,
    combine_fingerprints,
    fingerprint_module,
    resolve_device,
)

if TYPE_CHECKING:  # onnxruntime is imported only when IS-Net is loaded
    from worker.inspection.models.isnet import IsNetSalientModel

RANDOM_SEED = 1234  # random profiles are deterministic, so their fingerprints are stable


@dataclass
class ModelBundle:
    profile: str
    device: torch.device
    clip: ClipModel
    clipseg: ClipSegModel
    sam: SamMaskProposer | None
    isnet: IsNetSalientModel | None
    fingerprints: dict[str, str] = field(default_factory=dict)
    precision: Precision = "fp32"

    @property
    def fingerprint(self) -> str:
        return f"{self.profile}-{combine_fingerprints(self.fingerprints)}"


def _tiny_clip(device: torch.device) -> ClipModel:
    torch.manual_seed(RANDOM_SEED)
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    return build_open_clip("tiny", None, device, model_cfg=config)


def _demo_clip(device: torch.device) -> ClipModel:
    """A tiny CLIP fine enough for nearest-patch matching: 224 px tiles in 8 px patches (28 x 28).

    Its positional embedding is zeroed: random position vectors would make two identical patches at
    different places of a tile unlike each other (real CLIP's learned ones are smooth and small), and
    a reference bank could then only match a patch at the place it was seen.
    """
    torch.manual_seed(RANDOM_SEED)
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 4, "width": 64, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    clip = build_open_clip("demo", None, device, model_cfg=config)
    with torch.no_grad():
        clip.model.visual.positional_embedding.zero_()
    return clip


def tiny_clipseg_config() -> CLIPSegConfig:
    return CLIPSegConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "patch_size": 16,
            "image_size": 64,
        },
        projection_dim=32,
        reduce_dim=16,
        extract_layers=[0, 1, 2],  # the decoder reads 3 of the 4 layers, so `segment` cuts the last one
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        use_complex_transposed_convolution=True,
    )


def base_clipseg_config() -> CLIPSegConfig:
    """The architecture of CIDAS/clipseg-rd64-refined (ViT-B/16 vision, reduce dim 64)."""
    return CLIPSegConfig(vision_config={"patch_size": 16}, use_complex_transposed_convolution=True)


TINY_SAM_OPTIONS = SamGeneratorOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
REAL_SAM_OPTIONS = SamGeneratorOptions()


def _load_isnet(settings: ModelSettings) -> IsNetSalientModel:
    import onnxruntime

    from worker.inspection.models.isnet import default_isnet_path, load_isnet, providers_for

    device = resolve_device(settings.device)
    path = settings.isnet_path or default_isnet_path(settings.models_dir)
    if settings.isnet_precision == "int8":
        from worker.inspection.models.isnet_int8 import load_int8_isnet

        return load_int8_isnet(path)
    precision = resolve_precision(settings.precision, device)
    if isnet_on_torch(settings.isnet_runtime, device.type, precision):
        return load_isnet(path, torch_runtime=(device, precision))
    providers = providers_for(device.type, device.index, onnxruntime.get_available_providers())
    return load_isnet(path, providers=providers)


def isnet_on_torch(runtime: str, device_type: str, precision: Precision) -> bool:
    """models.isnet_runtime: auto runs IS-Net on torch on CUDA or in half precision (faster there),
    on onnxruntime in fp32 on a CPU (faster there; models.precision=int8 leaves IS-Net to
    models.isnet_precision)."""
    if runtime != "auto":
        return runtime == "torch"
    return device_type == "cuda" or precision in HALF_PRECISIONS


def _build_tiny(settings: ModelSettings, device: torch.device, profile: str = "tiny") -> ModelBundle:
    sam = (
        build_tiny_sam(device, TINY_SAM_OPTIONS, RANDOM_SEED, settings.sam_image_size)
        if settings.foreground == "sam+isnet"
        else None
    )
    return ModelBundle(
        profile,
        device,
        _demo_clip(device) if profile == "demo" else _tiny_clip(device),
        build_clipseg_random(tiny_clipseg_config(), device, RANDOM_SEED),
        sam,
        _load_isnet(settings) if settings.foreground != "none" else None,
    )


def _build_demo(settings: ModelSettings, device: torch.device) -> ModelBundle:
    return _build_tiny(settings, device, profile="demo")


def _build_base(settings: ModelSettings, device: torch.device) -> ModelBundle:
    torch.manual_seed(RANDOM_SEED)
    clip = build_open_clip(settings.clip_model, None, device)
    clipseg = build_clipseg_random(base_clipseg_config(), device, RANDOM_SEED)
    sam = (
        build_sam_random(settings.sam_type, device, REAL_SAM_OPTIONS, RANDOM_SEED, settings.sam_image_size)
        if settings.foreground == "sam+isnet"
        else None
    )
    return ModelBundle(
        "base", device, clip, clipseg, sam, _load_isnet(settings) if settings.foreground != "none" else None
    )


def _build_default(settings: ModelSettings, device: torch.device) -> ModelBundle:
    """Real weights from local files only (see locate.py); every missing one is named at once."""
    missing: list[str] = []
    clip_file = locate.find_clip(settings)
    clip = None
    if clip_file is None:
        missing.append(f"CLIP {settings.clip_model} ({settings.clip_pretrained}): {locate.clip_expected(settings)}")
    else:  # always a file, never an open_clip tag: a tag would let open_clip reach for the network
        try:
            clip = build_open_clip(settings.clip_model, str(clip_file), device)
        except Exception as exc:
            missing.append(
                f"CLIP {settings.clip_model}: {clip_file} does not load [{type(exc).__name__}: {str(exc)[:160]}]"
            )
    clipseg_folder = locate.find_clipseg(settings)
    if clipseg_folder is None:
        missing.append(f"CLIPSeg {settings.clipseg_model}: {locate.clipseg_expected(settings)}")
    sam_checkpoint = locate.find_sam(settings) if settings.foreground == "sam+isnet" else None
    if settings.foreground == "sam+isnet" and sam_checkpoint is None:
        missing.append(f"SAM {settings.sam_type}: {locate.sam_expected(settings)}")
    isnet = None
    if settings.foreground != "none":
        try:
            isnet = _load_isnet(settings)
        except FileNotFoundError as exc:
            missing.append(f"IS-Net: {exc}")
    if missing:
        raise ModelWeightsMissing(
            "profile 'default' needs real weights that are not installed:\n  - "
            + "\n  - ".join(missing)
            + "\n(`linewatch-worker models pull` fetches them; `linewatch-worker models check` shows what is found;"
            " use --profile tiny for a smoke test with random weights, its scores mean nothing)"
        )
    clipseg = load_clipseg_folder(clipseg_folder, device)
    sam = (
        load_sam(settings.sam_type, sam_checkpoint, device, REAL_SAM_OPTIONS, settings.sam_image_size)
        if sam_checkpoint
        else None
    )
    return ModelBundle("default", device, clip, clipseg, sam, isnet)


PROFILES: dict[str, Callable[[ModelSettings, torch.device], ModelBundle]] = {
    "tiny": _build_tiny,
    "demo": _build_demo,
    "base": _build_base,
    "default": _build_default,
}


def set_precision(bundle: ModelBundle, precision: Precision) -> None:
    """Run every torch model of the bundle in `precision`.

    CLIP's image tower, CLIPSeg's vision trunk and decoder, SAM's image encoder and mask decoder run
    on copies converted to it: faster than autocast for each on an AMX CPU (docs/benchmarks.md). In int8
    the copies of CLIP's tower, CLIPSeg's trunk and SAM's encoder and decoder have int8 Linear layers,
    and CLIPSeg's decoder stays fp32.
    IS-Net runs on torch in that precision when models.isnet_runtime says so (isnet_on_torch).
    """
    bundle.precision = precision
    for model in (bundle.clip, bundle.clipseg, bundle.sam):
        if model is not None:
            model.precision = precision


def load_models(settings: ModelSettings) -> ModelBundle:
    """Check the weight files against their pins or lock, build the profile named in settings and
    fingerprint every model in it. Raises WeightsMismatch before building anything from a changed file."""
    if settings.profile not in PROFILES:
        raise ValueError(f"unknown profile {settings.profile!r}; choose one of {sorted(PROFILES)}")
    require_intact(settings)
    bundle = PROFILES[settings.profile](settings, resolve_device(settings.device))
    bundle.fingerprints = {
        "clip": fingerprint_module("clip", bundle.clip.model),
        "clipseg": fingerprint_module("clipseg", bundle.clipseg.model),
    }
    if bundle.sam is not None:
        bundle.fingerprints["sam"] = fingerprint_module("sam", bundle.sam.sam)
    if bundle.isnet is not None:
        bundle.fingerprints["isnet"] = bundle.isnet.fingerprint
    set_precision(bundle, resolve_precision(settings.precision, bundle.device))  # fingerprints are of the weights
    return bundle
