"""IS-Net in int8 on a CPU: onnxruntime's static quantisation of the fp32 graph (models.isnet_precision).

`quantize_isnet` calibrates the activation ranges on a few frames (onnxruntime's MinMax calibration;
weights per channel in int8, activations in uint8, QDQ format) and writes
``<isnet file>.int8.onnx`` beside the float file, recording the float file's sha256 in the graph's
metadata. `load_int8_isnet` refuses a file made from another float file, so a worker never runs an
int8 graph that does not match the configured IS-Net. Measured on a 2-core AVX512-VNNI CPU, 18
synthetic belt frames: 537-555 against 1,635-1,695 ms per 1024 px pass, IoU of the >= 0.5 mask
against the float one 0.994 at worst (docs/benchmarks.md).

int8 runs on onnxruntime's CPU provider only (its CUDA provider has no fast QDQ kernels), so a GPU
worker keeps the float graph.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.inspection.models.isnet import IsNetSalientModel, onnxruntime_graph, sha256_file

FLOAT_DIGEST_KEY = "linewatch.float_sha256"  # metadata: sha256 of the float file it was made from
CALIBRATION_KEY = "linewatch.calibration_frames"


def int8_path(float_path: str | Path) -> Path:
    """Where the int8 graph of a float IS-Net file lies: ``isnet.onnx`` -> ``isnet.int8.onnx``."""
    float_path = Path(float_path)
    return float_path.with_name(f"{float_path.stem}.int8.onnx")


def quantize_isnet(float_path: str | Path, frames: Sequence[np.ndarray], progress: Any = None) -> Path:
    """Write the int8 graph of the IS-Net file at ``float_path``, calibrated on ``frames``.

    frames: HxWx3 uint8 RGB images like the line's own (good frames are fine; a handful to a few
    dozen). progress: an object with update(n) (a tqdm bar), advanced once per calibration frame.
    Returns the path written, `int8_path(float_path)`.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not frames:
        raise ValueError("quantize_isnet needs at least one calibration frame")
    float_path = Path(float_path)
    out_path = int8_path(float_path)
    graph = onnxruntime_graph(onnx.load(str(float_path)), ["CPUExecutionProvider"])  # fp32, the salient map only
    input_name = graph.graph.input[0].name

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator = ({input_name: IsNetSalientModel.preprocess(frame)[None]} for frame in frames)

        def get_next(self):
            batch = next(self._batches, None)
            if batch is not None and progress is not None:
                progress.update(1)
            return batch

    with tempfile.TemporaryDirectory() as work:
        fp32_file = Path(work) / "isnet_fp32.onnx"
        onnx.save(graph, str(fp32_file))
        quantize_static(
            str(fp32_file),
            str(Path(work) / "int8.onnx"),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibMovingAverage": True},  # one odd frame does not set the range alone
        )
        quantized = onnx.load(str(Path(work) / "int8.onnx"))
    onnx.helper.set_model_props(
        quantized, {FLOAT_DIGEST_KEY: sha256_file(float_path), CALIBRATION_KEY: str(len(frames))}
    )
    onnx.save(quantized, str(out_path))
    return out_path


def load_int8_isnet(float_path: str | Path) -> IsNetSalientModel:
    """The int8 graph of the float IS-Net at ``float_path``, on onnxruntime's CPU provider.

    Raises:
        FileNotFoundError: no int8 graph (run ``linewatch-worker models quantize-isnet``).
        ValueError: the int8 graph was made from another float file.
    """
    import onnxruntime as ort

    float_path = Path(float_path)
    path = int8_path(float_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"models.isnet_precision=int8: no int8 IS-Net at {path.resolve()}; make it from the line's frames with "
            f"`linewatch-worker models quantize-isnet --images DIR` (or set models.isnet_precision=float)"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    made_from = session.get_modelmeta().custom_metadata_map.get(FLOAT_DIGEST_KEY)
    expected = sha256_file(float_path)
    if made_from != expected:
        raise ValueError(
            f"{path} was made from another IS-Net file (sha256 {made_from}, the configured {float_path} is "
            f"{expected}); run `linewatch-worker models quantize-isnet --images DIR` again"
        )
    return IsNetSalientModel(session, path, sha256_file(path))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1 when both are empty)."""
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0
