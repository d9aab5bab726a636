"""`linewatch-worker bench --precision-probe`: per model, fp32 against bf16 autocast, bf16 weights and int8.

Which is faster depends on the hardware (AMX, tensor cores) and the batch size, so it is
measured rather than assumed: ms per image for CLIP's image tower, CLIPSeg's vision tower
and SAM's image encoder, at the profile's architectures (random weights cost the same), on a
CPU also with their Linear layers in dynamic int8 (models.precision=int8), and IS-Net's graph
on onnxruntime against torch (models.isnet_runtime).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common.settings import ModelSettings
from worker.inspection.models.precision import converted_copy, cpu_has_bf16_kernels
from worker.inspection.models.registry import load_models


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


@torch.inference_mode()
def probe(module: torch.nn.Module, inputs: torch.Tensor, repeats: int, device: torch.device) -> dict:
    """ms per image of `module(inputs)` in fp32, under bf16 autocast, with its weights converted to bf16,
    and on a CPU with its Linear layers in int8."""
    fp32 = _ms(lambda: module(inputs), repeats)

    def autocast_run():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            module(inputs)

    autocast = _ms(autocast_run, repeats)
    converted = converted_copy(module, "bf16")
    weights = _ms(lambda: converted(inputs.to(torch.bfloat16)), repeats)
    per_image = len(inputs)
    report = {
        "batch": per_image,
        "fp32_ms_per_image": round(fp32 / per_image, 1),
        "bf16_autocast_ms_per_image": round(autocast / per_image, 1),
        "bf16_weights_ms_per_image": round(weights / per_image, 1),
    }
    if device.type == "cpu":
        quantised = converted_copy(module, "int8")
        report["int8_ms_per_image"] = round(_ms(lambda: quantised(inputs), repeats) / per_image, 1)
    return report


def run_precision_probe(settings: ModelSettings, batch: int, repeats: int) -> dict:
    models = load_models(settings.model_copy(update={"precision": "fp32"}))
    device = models.device
    clip_size, seg_size = models.clip.normalisation.size, models.clipseg.size
    report = {
        "profile": models.profile,
        "device": str(device),
        "clip_image_tower": probe(
            models.clip.model.visual, torch.rand(batch, 3, clip_size, clip_size), repeats, device
        ),
        "clipseg_vision_tower": probe(
            models.clipseg.model.clip.vision_model, torch.rand(batch, 3, seg_size, seg_size), repeats, device
        ),
    }
    if models.sam is not None:
        size = models.sam.sam.image_encoder.img_size
        report["sam_image_encoder"] = probe(models.sam.sam.image_encoder, torch.rand(1, 3, size, size), repeats, device)
    if models.isnet is not None:
        report["isnet"] = probe_isnet(models.isnet.path, device, repeats)
    return report


def probe_isnet(path, device: torch.device, repeats: int) -> dict:
    """ms per 1024 px image: onnxruntime (as configured), torch fp32, torch bf16 (channels-last;
    left out on a CPU without bf16 kernels)."""
    from worker.inspection.models.isnet import load_isnet
    from worker.inspection.models.isnet_torch import torch_isnet_session

    image = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
    onnx_model = load_isnet(path)
    out = {"onnxruntime_ms_per_image": round(_ms(lambda: onnx_model.predict_raw(image), repeats), 1)}
    has_bf16 = device.type != "cpu" or cpu_has_bf16_kernels()
    for precision in ("fp32", "bf16") if has_bf16 else ("fp32",):
        session = torch_isnet_session(path, device, precision)
        feeds = {session.get_inputs()[0].name: image}
        ms = _ms(lambda session=session, feeds=feeds: session.run(["output"], feeds), repeats)
        out[f"torch_{precision}_ms_per_image"] = round(ms, 1)
    return out
