"""oneDNN's fused pointwise kernels: a ReLU applied to a convolution's or a linear layer's output
while it is still in cache, the kernels torch.compile uses on a CPU.

Each computes what the two calls it replaces do, bit-identical on most shapes and machines and
else to the last bit of the GEMM kernel oneDNN picks (tests/unit/test_onednn.py). Builds without
oneDNN lack them: check `FUSED_POINTWISE` before using either.
"""

from __future__ import annotations

import torch

FUSED_POINTWISE = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
)


class ConvReLU(torch.nn.Module):
    """`relu(conv(x))` in one oneDNN call (a Conv2d with zero padding given as numbers)."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, "relu", [None], ""
        )


class LinearReLU(torch.nn.Module):
    """`relu(linear(x))` in one oneDNN call; x: (..., in_features)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.linear.weight, self.linear.bias, "relu", [], "")
