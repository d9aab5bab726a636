"""worker.keep_freed_memory: a large tensor freed and allocated again faults in no fresh pages."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# Allocates and frees 40 MB tensors in the main thread and in a second one (the worker infers in one),
# and prints the minor page faults of the last 5 of 20 rounds in each.
PROBE = """
import json, resource, sys, threading
import torch
from worker.memory import freed_memory_kept, keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults(out):
    counts = []
    for _ in range(20):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(10 << 20)
        x.fill_(1.0)
        del x
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    out.append(sum(counts[-5:]))
out = []
faults(out)
thread = threading.Thread(target=faults, args=(out,))
thread.start()
thread.join()
print(json.dumps({"applied": applied, "kept": freed_memory_kept(), "faults": out}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _huge_pages_always() -> bool:
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


def test_kept_memory_is_reused_without_page_faults():
    default, kept = _probe("default"), _probe("keep")
    pages = (40 << 20) // 4096  # one round's tensor, in 4 KiB pages
    assert default == {"applied": False, "kept": False, "faults": default["faults"]}
    if not _huge_pages_always():  # 2 MiB pages would fault 512x less often
        assert all(f >= 5 * pages // 2 for f in default["faults"])  # glibc maps fresh pages every round
    assert kept["applied"] is kept["kept"] is True
    assert all(f < pages // 10 for f in kept["faults"]), kept  # after warm-up, the freed memory is reused
