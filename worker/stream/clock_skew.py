"""How far each camera's clock is from the broker's, as the worker's status (in /readyz) shows it.

Per camera: the latest skew (broker record time minus `captured_at`, seconds) and the largest
magnitude seen. Bounded: at most MAX_CAMERAS cameras, the least recently seen dropped first, since
camera ids come from frame headers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_CAMERAS = 1024


class SkewBook:
    def __init__(self, max_cameras: int = MAX_CAMERAS) -> None:
        self.max_cameras = max_cameras
        self._cameras: OrderedDict[str, tuple[float, float]] = OrderedDict()  # camera -> (latest, max |skew|)
        self._lock = threading.Lock()

    def observe(self, camera_id: str, skew_s: float) -> None:
        with self._lock:
            _, worst = self._cameras.pop(camera_id, (0.0, 0.0))
            self._cameras[camera_id] = (skew_s, max(worst, abs(skew_s)))
            while len(self._cameras) > self.max_cameras:
                self._cameras.popitem(last=False)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """{camera: {"latest_s", "max_abs_s"}}, rounded to milliseconds."""
        with self._lock:
            return {
                camera: {"latest_s": round(latest, 3), "max_abs_s": round(worst, 3)}
                for camera, (latest, worst) in self._cameras.items()
            }
