"""oneDNN's fused Linear -> ReLU equals the two calls, to the rounding of the GEMM kernel it picks."""

import pytest
import torch

from tests.support.hardware import needs_cpu_bf16
from worker.inspection.models.onednn import FUSED_POINTWISE, LinearReLU

pytestmark = pytest.mark.skipif(not FUSED_POINTWISE, reason="this torch build has no oneDNN pointwise kernels")


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_cpu_bf16)])
@pytest.mark.parametrize("shape", [(7, 24), (3, 11, 24)])
def test_linear_relu_equals_linear_then_relu(dtype, shape):
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40).to(dtype)
    x = torch.randn(*shape).to(dtype)
    with torch.inference_mode():
        expected = torch.relu(linear(x))
        fused = LinearReLU(linear)(x)
    assert fused.dtype == dtype and fused.shape == (*shape[:-1], 40)
    # bit-identical on most machines; on one 2-core VM the (7, 24) fp32 case differed in the last bit
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(fused == 0, expected == 0)  # the same units cut
    assert (expected == 0).any() and (expected > 0).any()  # the ReLU really cut something
