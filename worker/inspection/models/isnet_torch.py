"""IS-Net's ONNX graph run by torch (onnx2torch), for the device and for bf16 on AMX CPUs.

onnxruntime's CPU build runs IS-Net in fp32 only and never on a GPU unless onnxruntime-gpu is
installed. The same graph converted to a torch module runs wherever torch does, in bf16 with
channels-last convolutions where the hardware has it, each Conv -> ReLU pair fused on a CPU:
on this project's AMX CPU about 370 ms per 1024 px image against onnxruntime's 1,545 ms, with a
largest difference in the salient map of 7.7e-4 (docs/benchmarks.md). In fp32 on a CPU torch is slower than onnxruntime (5 s), so
`models.isnet_runtime = auto` keeps onnxruntime there.

`TorchIsNetSession` answers the few `InferenceSession` calls `IsNetSalientModel` makes, so the
pre- and post-processing stay in one place (isnet.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from worker.inspection.models.onednn import FUSED_POINTWISE, ConvReLU
from worker.inspection.models.precision import DTYPES, Precision


def as_fp32_graph(model):
    """The shipped export stores fp16 weights behind Cast nodes; return the same graph in fp32.

    Initialisers and constants become float32 and every Cast (all between fp16 and fp32 in
    this export) an Identity, so torch can run the whole graph in one dtype of its choosing.
    Nodes are put in topological order, which onnx2torch needs and the export does not keep.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    for index, init in enumerate(list(graph.initializer)):
        if init.data_type == TensorProto.FLOAT16:
            graph.initializer[index].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name)
            )
    for node in graph.node:
        if node.op_type == "Cast":
            (to,) = [a.i for a in node.attribute if a.name == "to"]
            if to not in (TensorProto.FLOAT, TensorProto.FLOAT16):
                raise ValueError(f"IS-Net graph: Cast {node.name} to type {to} is not a float cast")
            node.op_type = "Identity"
            del node.attribute[:]
        elif node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT16:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32)))
    del graph.value_info[:]  # the fp16 shapes/types recorded there no longer hold
    _sort_topologically(graph)
    return model


def only_the_salient_map(model):
    """Keep only the graph output IsNetSalientModel reads ("output", sigmoid(d1)).

    The imgly export also returns the side maps d2..d6 and decoder features, which both
    runtimes would compute on every pass: 3-5% of a 1024 px pass on this CPU.
    """
    outputs = list(model.graph.output)
    keep = [o for o in outputs if o.name == "output"] or outputs[:1]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return model


def _sort_topologically(graph) -> None:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"IS-Net graph: {len(waiting)} nodes have inputs nothing produces")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def fuse_conv_relu(module: torch.fx.GraphModule) -> int:
    """Replace every Conv2d whose only user is a ReLU by a ConvReLU; returns how many were fused.

    10% of an IS-Net pass on the AMX CPU: its 112 ReLUs each re-read a full activation map otherwise.
    """
    graph, fused = module.graph, 0
    for node in list(graph.nodes):
        if not _calls(module, node, torch.nn.ReLU):
            continue
        source = node.args[0]
        if not _calls(module, source, torch.nn.Conv2d) or len(source.users) != 1:
            continue
        conv = module.get_submodule(source.target)
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        name = f"fused_conv_relu_{fused}"
        module.add_submodule(name, ConvReLU(conv))
        with graph.inserting_after(node):
            replacement = graph.call_module(name, source.args)
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        graph.erase_node(source)
        fused += 1
    graph.lint()
    module.recompile()
    return fused


def _calls(module: torch.fx.GraphModule, node, kind: type) -> bool:
    return (
        isinstance(node, torch.fx.Node)
        and node.op == "call_module"
        and isinstance(module.get_submodule(node.target), kind)
    )


class TorchIsNetSession:
    """The subset of onnxruntime's `InferenceSession` that `IsNetSalientModel` uses, on torch."""

    def __init__(
        self, module: torch.nn.Module, inputs: Sequence, outputs: Sequence[str], device: torch.device, precision
    ):
        self.dtype = DTYPES[precision]
        self.device = device
        self.precision = precision
        # channels-last is what oneDNN's (AMX) and cuDNN's fast convolution kernels want
        self.module = module.eval().to(device=device, dtype=self.dtype, memory_format=torch.channels_last)
        self.fused = fuse_conv_relu(self.module) if device.type == "cpu" and FUSED_POINTWISE else 0
        self._inputs = list(inputs)
        self._outputs = list(outputs)

    def get_inputs(self) -> list:
        return self._inputs

    def get_outputs(self) -> list:
        return [SimpleNamespace(name=name) for name in self._outputs]

    def get_providers(self) -> list[str]:
        return [f"torch:{self.device.type}:{self.precision}"]

    @torch.inference_mode()
    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feeds.values()
        x = torch.from_numpy(batch).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        out = self.module(x)
        out = out if isinstance(out, (list, tuple)) else (out,)
        by_name = dict(zip(self._outputs, out))
        return [by_name[name].float().cpu().numpy() for name in output_names]


def torch_isnet_session(path: Path, device: torch.device, precision: Precision) -> TorchIsNetSession:
    """Convert the ONNX file at `path` (never modified) to a torch module on `device` in `precision`."""
    import onnx
    from onnx2torch import convert

    model = only_the_salient_map(as_fp32_graph(onnx.load(str(path))))
    inputs = [
        SimpleNamespace(name=i.name, shape=[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim])
        for i in model.graph.input
    ]
    outputs = [o.name for o in model.graph.output]
    module = convert(model)
    module.graph.eliminate_dead_code()  # the nodes only the dropped outputs needed
    module.recompile()
    return TorchIsNetSession(module, inputs, outputs, device, precision)
