"""Which floating-point precision the models run in (`models.precision`).

`auto` picks bfloat16 where the hardware computes it fast (CUDA devices that support
it; CPUs with AMX-BF16), else float32. On a CPU with AVX512-BF16 but no AMX the flags do
not tell: 2048x2048 bf16 matmuls ran at 0.57x fp32 on 2 virtual cores of a Xeon that hides its
AMX, and at 4.5x on 2 virtual cores of an AMD EPYC (docs: benchmarks). There `auto` times one bf16
matmul against fp32 (`bf16_matmul_speedup`, once per process) and takes bf16 when it is
at least MIN_BF16_SPEEDUP times faster. The choice is a pure function of the device type
and the hardware's answers, so tests can pin it.

`int8` is never chosen by `auto`, since it moves scores more than bf16 does: it must be asked
for. It runs the big Linear stacks (CLIP's image tower, CLIPSeg's vision trunk, SAM's image
encoder and mask decoder) with dynamic int8 on a CPU: the weights are quantised once, per output
channel, and the activations per call. On 2 virtual cores of an AMD EPYC (AVX512-VNNI, no AMX), the first
three ran 2.2x, 3.6x and 2.0x faster than fp32, SAM's decoder 1.4x.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch

PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16", "int8"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
CPU_BF16_FLAGS = frozenset({"amx_bf16"})  # AMX tiles: bf16 always pays
CPU_BF16_TIMED_FLAGS = frozenset({"avx512_bf16"})  # pays on some CPUs and not on others: timed
MIN_BF16_SPEEDUP = 1.5  # measured 0.57x where bf16 did not pay, 4.5x where it did
# The float dtype a model's inputs and activations take. int8 quantises only inside Linear layers.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
HALF_PRECISIONS = frozenset({"bf16", "fp16"})
log = logging.getLogger(__name__)


def choose_precision(
    setting: PrecisionSetting,
    device_type: str,
    cpu_flags: Iterable[str] = (),
    cuda_bf16: bool = False,
    cpu_bf16_speedup: float | None = None,
    cpu_bf16_kernels: bool = True,
) -> Precision:
    """The precision to run: the setting itself, or for `auto` bf16 where the hardware has it.

    cpu_bf16_speedup: fp32 over bf16 matmul time on this CPU, where it was timed (AVX512-BF16
    without AMX); None where it was not.
    cpu_bf16_kernels: whether oneDNN has bf16 kernels on this CPU (see `cpu_has_bf16_kernels`).

    fp16 on a CPU is refused: CPUs have no fast fp16 matmul and autocast would crawl. int8 off a
    CPU is refused: its kernels (fbgemm) are the CPU's. bf16 on a CPU without oneDNN's bf16
    kernels is refused: its fused convolutions and linears would fail on the first frame.
    """
    if device_type == "cpu" and not cpu_bf16_kernels:
        if setting == "bf16":
            raise ValueError(
                "models.precision=bf16 needs a CPU with bf16 kernels (AVX512-BW/VL/DQ or AVX-NE-CONVERT); "
                "this one has none: use auto or fp32"
            )
        if setting == "auto":
            return "fp32"
    if setting == "auto":
        if device_type == "cuda":
            return "bf16" if cuda_bf16 else "fp32"
        if device_type == "cpu" and CPU_BF16_FLAGS & set(cpu_flags):
            return "bf16"
        if device_type == "cpu" and cpu_bf16_speedup is not None and cpu_bf16_speedup >= MIN_BF16_SPEEDUP:
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


@functools.cache
def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN computes bf16 on this CPU: AVX512-BW/VL/DQ or AVX-NE-CONVERT (an AVX2-only
    CPU has none, and a bf16 convolution or fused linear raises there)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def needs_bf16_timing(setting: PrecisionSetting, device_type: str, flags: Iterable[str]) -> bool:
    """Whether `auto` has to time bf16 on this CPU: AVX512-BF16 without AMX."""
    flags = set(flags)
    return (
        setting == "auto" and device_type == "cpu" and bool(CPU_BF16_TIMED_FLAGS & flags) and not CPU_BF16_FLAGS & flags
    )


@functools.cache
def bf16_matmul_speedup(side: int = 1024, repeats: int = 3) -> float:
    """fp32 time over bf16 time of a side x side matmul on this CPU, each the best of `repeats` (about 0.1 s)."""

    def best_ms(dtype: torch.dtype) -> float:
        a, b = torch.randn(side, side).to(dtype), torch.randn(side, side).to(dtype)
        a @ b  # warm-up: kernel selection
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    speedup = round(best_ms(torch.float32) / best_ms(torch.bfloat16), 2)
    log.info(
        "a bf16 matmul ran %.2fx as fast as fp32 on this CPU (models.precision=auto takes bf16 from %.1fx)",
        speedup,
        MIN_BF16_SPEEDUP,
    )
    return speedup


def timed_bf16_speedup(setting: PrecisionSetting, device_type: str, flags: Iterable[str]) -> float | None:
    """bf16_matmul_speedup where `auto` needs it on this device, else None."""
    return bf16_matmul_speedup() if needs_bf16_timing(setting, device_type, flags) else None


def resolve_precision(setting: PrecisionSetting, device: torch.device) -> Precision:
    """choose_precision with the host's answers."""
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    flags = cpu_flags() if device.type == "cpu" else frozenset()
    kernels = device.type != "cpu" or cpu_has_bf16_kernels()
    speedup = timed_bf16_speedup(setting, device.type, flags) if kernels else None
    return choose_precision(setting, device.type, flags, cuda_bf16, speedup, kernels)


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
