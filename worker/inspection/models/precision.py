"""Which floating-point precision the models run in (`models.precision`).

`auto` picks bfloat16 where the hardware computes it fast (CUDA devices that support
it; CPUs with AMX-BF16), else float32. AVX512-BF16 alone is not enough: on a 2-core
AVX512-BF16 CPU without AMX, 2048x2048 bf16 matmuls ran at 0.57x fp32 and CLIP's image
tower on bf16 weights at 0.64x (README, Precision). The choice is a pure function of the
device type and the hardware's answers, so tests can pin it.

`int8` is never chosen by `auto`, since it moves scores more than bf16 does: it must be asked
for. It runs the big Linear stacks (CLIP's image tower, CLIPSeg's vision trunk, SAM's image
encoder) with dynamic int8 on a CPU: the weights are quantised once, per output channel, and the
activations per call. On the 2-core AVX512-VNNI CPU that has no AMX, those three ran 2.2x, 3.6x
and 2.0x faster than fp32.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch

PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16", "int8"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
CPU_BF16_FLAGS = frozenset({"amx_bf16"})  # AMX tiles; AVX512-BF16 alone ran slower than fp32
# The float dtype a model's inputs and activations take. int8 quantises only inside Linear layers.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
HALF_PRECISIONS = frozenset({"bf16", "fp16"})


def choose_precision(
    setting: PrecisionSetting, device_type: str, cpu_flags: Iterable[str] = (), cuda_bf16: bool = False
) -> Precision:
    """The precision to run: the setting itself, or for `auto` bf16 where the hardware has it.

    fp16 on a CPU is refused: CPUs have no fast fp16 matmul and autocast would crawl. int8 off a
    CPU is refused: its kernels (fbgemm) are the CPU's.
    """
    if setting == "auto":
        if device_type == "cuda":
            return "bf16" if cuda_bf16 else "fp32"
        if device_type == "cpu" and CPU_BF16_FLAGS & set(cpu_flags):
            return "bf16"
        return "fp32"
    if setting == "fp16" and device_type == "cpu":
        raise ValueError("models.precision=fp16 needs a CUDA device; on a CPU use bf16 or fp32")
    if setting == "int8" and device_type != "cpu":
        raise ValueError("models.precision=int8 runs on the CPU only; on a GPU use bf16 or fp16")
    return setting


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The `flags` of the first CPU in /proc/cpuinfo (empty where the file does not exist)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(setting: PrecisionSetting, device: torch.device) -> Precision:
    """choose_precision with this machine's answers."""
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_precision(setting, device.type, cpu_flags() if device.type == "cpu" else (), cuda_bf16)


def converted_copy(module: torch.nn.Module, precision: Precision) -> torch.nn.Module | None:
    """A copy of `module` with its weights in `precision` (None for fp32); the original keeps its fp32 weights."""
    if precision == "fp32":
        return None
    if precision == "int8":
        return int8_copy(module)
    return copy.deepcopy(module).to(DTYPES[precision])


def int8_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` whose `nn.Linear` layers compute in int8 (dynamic quantisation: weights
    per output channel, activations per call); every other layer stays fp32, as do inputs and outputs.

    torch.ao's eager quantisation warns that it is deprecated for torchao. torchao's int8 dynamic
    quantisation ran CLIPSeg's vision tower 2.1x faster than fp32 on this project's CPU, fbgemm's 3.6x,
    so fbgemm's is used while the pinned torch has it.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
        return quantize_dynamic(
            copy.deepcopy(module), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


def shared_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module`'s tree of submodules that shares its parameters and buffers (none is copied),
    so submodules can be swapped in the copy without touching the original."""
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo=shared)


class InPrecision(torch.nn.Module):
    """`module` converted to `precision`: float inputs are cast to it, float outputs come back as fp32."""

    def __init__(self, module: torch.nn.Module, precision: Precision):
        super().__init__()
        self.module = converted_copy(module, precision)
        self.dtype = DTYPES[precision]

    def forward(self, *args, **kwargs):
        args = [self._cast(a, self.dtype) for a in args]
        kwargs = {key: self._cast(value, self.dtype) for key, value in kwargs.items()}
        out = self.module(*args, **kwargs)
        return (
            tuple(self._cast(o, torch.float32) for o in out)
            if isinstance(out, tuple)
            else self._cast(out, torch.float32)
        )

    @staticmethod
    def _cast(value, dtype: torch.dtype):
        return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


class SwitchesPrecision:
    """A model adapter whose `precision` can be set at any time: the setter calls `_use_precision`,
    which builds what runs in it (converted copies); the fp32 weights stay for an exact switch back."""

    _precision: Precision = "fp32"

    @property
    def precision(self) -> Precision:
        return self._precision

    @precision.setter
    def precision(self, value: Precision) -> None:
        self._precision = value
        self._use_precision(value)

    def _use_precision(self, precision: Precision) -> None:
        raise NotImplementedError


def autocast(precision: Precision, device: torch.device):
    """A torch.autocast context for bf16/fp16 (matmuls and convolutions in half, reductions in fp32);
    none for fp32 and int8."""
    if precision not in HALF_PRECISIONS:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
