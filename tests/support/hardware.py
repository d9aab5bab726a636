"""Marks for tests that need something of the CPU they run on."""

import pytest

from worker.inspection.models.precision import cpu_has_bf16_kernels

needs_cpu_bf16 = pytest.mark.skipif(
    not cpu_has_bf16_kernels(),
    reason="this CPU has no oneDNN bf16 kernels (needs AVX512-BW/VL/DQ or AVX-NE-CONVERT)",
)
