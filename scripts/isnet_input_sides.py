"""Does IS-Net keep its salient mask below its 1024 px input? (docs: benchmarks)

The shipped ONNX has its 39 upsampling sizes baked for 1024 px. This script scales those size
constants to a side S (a multiple of 64), runs the edited graph on onnxruntime over synthetic belt
frames with known part masks, and prints per side: ms per image, the IoU of the >= 0.5 salient mask
against the 1024 px one, and its IoU against the drawn parts. A side keeps the mask only if its IoU
against 1024 stays near 1 on every frame.

    .venv/bin/python scripts/isnet_input_sides.py [--sides 768,640,512] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before onnxruntime initialises: no usage telemetry

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from producer.sources.scene import make_synthetic_scene  # noqa: E402
from worker.inspection.models.isnet import INPUT_SIZE, IsNetSalientModel, default_isnet_path  # noqa: E402
from worker.inspection.models.isnet_torch import only_the_salient_map  # noqa: E402


def at_input_side(model: onnx.ModelProto, side: int) -> onnx.ModelProto:
    """The graph with its Resize target sizes scaled from 1024 to `side` and a free output shape."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type != "Resize":
            continue
        for name in producer[node.input[3]].input:  # sizes = Concat(Shape(x)[:2], Constant([h, w]))
            constant = producer.get(name)
            if constant is not None and constant.op_type == "Constant":
                value = numpy_helper.to_array(constant.attribute[0].t)
                constant.attribute[0].t.CopyFrom(
                    numpy_helper.from_array((value * side // INPUT_SIZE).astype(value.dtype))
                )
    for tensor in list(graph.input) + list(graph.output):
        dims = tensor.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[2].dim_value, dims[3].dim_value = side, side
    del graph.value_info[:]  # shapes recorded for 1024 px
    return model


def salient_masks(session: ort.InferenceSession, side: int, images: list[np.ndarray]) -> tuple[list, float]:
    name = session.get_inputs()[0].name
    masks, times = [], []
    for image in images:
        batch = IsNetSalientModel.preprocess(image, side)[None]
        start = time.perf_counter()
        (raw,) = session.run(["output"], {name: batch})
        times.append(time.perf_counter() - start)
        masks.append(IsNetSalientModel.postprocess(raw, *image.shape[:2], side) >= 0.5)
    return masks, 1000 * float(np.median(times))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="768,640,512")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    scenes = [
        make_synthetic_scene(seed=seed, n_objects=count, object_scale=scale)
        for seed in range(6)
        for count, scale in [(3, 1.0), (5, 0.8), (8, 0.6)]
    ]
    images = [scene.image for scene in scenes]
    truth = [np.logical_or.reduce(scene.object_masks) for scene in scenes]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    base = only_the_salient_map(onnx.load(str(default_isnet_path())))
    report = {}
    for side in [INPUT_SIZE] + [int(s) for s in args.sides.split(",")]:
        graph = (
            base if side == INPUT_SIZE else at_input_side(onnx.ModelProto.FromString(base.SerializeToString()), side)
        )
        session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        report[side] = salient_masks(session, side, images)
    reference, reference_ms = report[INPUT_SIZE]
    print(f"{len(images)} synthetic frames of 3, 5 and 8 parts; the >= 0.5 salient mask")
    print("side  ms/image  speed-up  IoU vs 1024 (min / mean)  IoU vs drawn parts (min / mean)")
    for side, (masks, ms) in report.items():
        against_1024 = [iou(a, b) for a, b in zip(masks, reference)]
        against_truth = [iou(a, b) for a, b in zip(masks, truth)]
        print(
            f"{side:5d} {ms:9.0f} {reference_ms / ms:8.2f}x  {min(against_1024):.3f} / {np.mean(against_1024):.3f}"
            f"              {min(against_truth):.3f} / {np.mean(against_truth):.3f}"
        )


if __name__ == "__main__":
    main()
