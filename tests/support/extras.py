"""Slow installs built by the tests that need them, not before every run (still inside `make test`).

PyGObject (the `camera` extra) compiles against system headers for about a minute; only the
GenICam tests import it. A file lock keeps two pytest-xdist processes from building it at once.
"""

from __future__ import annotations

import fcntl
import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _gi_importable() -> bool:
    try:
        import gi  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_camera_extra() -> None:
    """`make camera` (PyGObject) unless `gi` imports already."""
    if _gi_importable():
        return
    lock_path = Path(sys.prefix) / ".camera-build.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        importlib.invalidate_caches()
        if not _gi_importable():
            subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "camera"], check=True)
            importlib.invalidate_caches()
