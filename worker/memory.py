"""Memory freed by one frame kept for the next (glibc's malloc), so its tensors do not fault in fresh pages.

PyTorch takes CPU tensors straight from malloc. glibc serves large allocations (above its mmap
threshold, at most 32 MiB) with fresh mappings and gives freed memory at the top of the heap back
to the kernel, so every frame's large activations fault in new zeroed pages again: 9 (tile, prompt)
pairs of CLIPSeg's decoder MLP hold 36 MB. On the project's 2-core VM, where a page fault is dear,
that MLP ran in 21 ms with the memory kept against 38-47 ms without (docs/benchmarks.md). The price:
the process keeps its peak memory instead of returning it between frames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


_kept = False


def keep_freed_memory(trim_threshold_bytes: int = 1 << 30) -> bool:
    """No allocation gets its own mapping, and up to `trim_threshold_bytes` free at the heap's top stay
    in the process. Process-wide, for every thread's arena. False (and nothing changed) off glibc."""
    global _kept
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    _kept = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold_bytes))
    return _kept


def freed_memory_kept() -> bool:
    """Whether keep_freed_memory took effect in this process (the bench reports it)."""
    return _kept
