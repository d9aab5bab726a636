"""IS-Net on torch (models.isnet_runtime): the shipped ONNX graph converted by onnx2torch gives
onnxruntime's salient maps, and `auto` picks the runtime that is faster where the worker runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from producer.sources import SyntheticSource
from tests.support.hardware import needs_cpu_bf16
from worker.inspection.models.isnet import default_isnet_path, load_isnet
from worker.inspection.models.precision import cpu_has_bf16_kernels
from worker.inspection.models.registry import isnet_on_torch

ISNET = default_isnet_path()
needs_isnet = pytest.mark.skipif(not ISNET.is_file(), reason="IS-Net model not fetched (make models)")


@pytest.mark.parametrize(
    ("runtime", "device", "precision", "expected"),
    [
        ("auto", "cpu", "fp32", False),  # onnxruntime: 3x faster than torch in fp32 on a CPU
        ("auto", "cpu", "bf16", True),  # torch: bf16 channels-last convolutions (AMX)
        ("auto", "cuda", "fp32", True),  # on the device without onnxruntime-gpu
        ("auto", "cuda", "fp16", True),
        ("auto", "cpu", "int8", False),  # int8 quantises the torch towers; IS-Net follows models.isnet_precision
        ("onnxruntime", "cuda", "bf16", False),
        ("torch", "cpu", "fp32", True),
    ],
)
def test_auto_picks_torch_on_cuda_or_in_half_precision(runtime, device, precision, expected):
    assert isnet_on_torch(runtime, device, precision) is expected


@pytest.fixture(scope="module")
def frames():
    return [frame.rgb for frame in SyntheticSource(seed=5, defect_rate=0.0, limit=2, parts="washers")]


@needs_isnet
def test_onnxruntime_runs_the_fp32_graph_on_the_cpu_and_the_export_on_a_gpu():
    import onnx

    from worker.inspection.models.isnet import onnxruntime_graph

    def ops(providers):
        graph = onnxruntime_graph(onnx.load(str(ISNET)), providers).graph
        return {node.op_type for node in graph.node}, [output.name for output in graph.output]

    cpu_ops, cpu_outputs = ops(["CPUExecutionProvider"])
    gpu_ops, gpu_outputs = ops([("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    assert "Cast" not in cpu_ops and "Cast" in gpu_ops
    assert cpu_outputs == gpu_outputs == ["output"]


@needs_isnet
def test_the_torch_graph_gives_onnxruntimes_salient_maps(frames):
    reference = load_isnet(ISNET, providers=["CPUExecutionProvider"])
    on_torch = load_isnet(ISNET, torch_runtime=(torch.device("cpu"), "fp32"))
    assert on_torch.fingerprint == reference.fingerprint  # the same file, whichever runs it
    assert on_torch.providers == ["torch:cpu:fp32"] and on_torch.batch_size == reference.batch_size
    assert on_torch.session.fused == 112  # every Conv -> ReLU pair of the graph runs as one oneDNN call
    expected = reference.predict(frames)
    got = on_torch.predict(frames)
    for a, b in zip(expected, got):
        assert a.shape == b.shape == frames[0].shape[:2]
        # both run the fp32 graph now (onnxruntime_graph on the CPU provider): only kernels' rounding differs
        assert np.abs(a - b).max() < 1e-4


@needs_isnet
@needs_cpu_bf16
def test_the_torch_graph_in_bf16_keeps_the_salient_mask(frames):
    expected = load_isnet(ISNET, providers=["CPUExecutionProvider"]).predict(frames)
    bf16 = load_isnet(ISNET, torch_runtime=(torch.device("cpu"), "bf16")).predict(frames)
    for a, b in zip(expected, bf16):
        # the foreground mask (>= 0.5) is what the pipeline keeps: the same pixels to within a sliver
        assert np.abs(a - b).max() < 0.05
        assert ((a >= 0.5) != (b >= 0.5)).mean() < 1e-3


@needs_isnet
def test_a_graph_with_a_non_float_cast_is_refused():
    import onnx
    from onnx import TensorProto, helper

    from worker.inspection.models.isnet_torch import as_fp32_graph

    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64, name="to_int")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1])],
    )
    with pytest.raises(ValueError, match="not a float cast"):
        as_fp32_graph(onnx.helper.make_model(graph))


@needs_isnet
def test_the_precision_probe_times_isnet_on_both_runtimes_and_the_towers_in_int8():
    from common.settings import ModelSettings
    from worker.bench.precision_probe import run_precision_probe

    report = run_precision_probe(ModelSettings(profile="tiny", foreground="isnet"), batch=1, repeats=1)
    timings = report["isnet"]
    expected = {"onnxruntime_ms_per_image", "torch_fp32_ms_per_image"}
    if cpu_has_bf16_kernels():
        expected.add("torch_bf16_ms_per_image")  # left out where the CPU has no bf16 kernels
    assert set(timings) == expected
    assert all(ms > 0 for ms in timings.values())
    towers = ("clip_image_tower", "clipseg_vision_tower")
    assert all(report[tower]["int8_ms_per_image"] > 0 for tower in towers)  # the CPU's int8 path, timed too


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_cpu_bf16)])
def test_conv_relu_fusion_is_exact_and_leaves_shared_convolutions_alone(dtype):
    from worker.inspection.models.isnet_torch import fuse_conv_relu
    from worker.inspection.models.onednn import FUSED_POINTWISE

    if not FUSED_POINTWISE:
        pytest.skip("this torch build has no oneDNN pointwise convolution")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, stride=2)
            self.relu_a, self.relu_b = torch.nn.ReLU(), torch.nn.ReLU()

        def forward(self, x):
            shared = self.b(self.relu_a(self.a(x)))
            return self.relu_b(shared) + shared  # b's output has two users: it must stay unfused

    torch.manual_seed(0)
    net = torch.fx.symbolic_trace(Net().eval()).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = net(x)
        assert fuse_conv_relu(net) == 1
        assert torch.equal(net(x), expected)
