"""What every frame source yields and is: `Frame`, `FrameSource`, and the operator-facing `SourceError`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from common.schemas import utc_now


class SourceError(RuntimeError):
    """A source cannot be opened or read (message is meant for the operator)."""


@dataclass
class Frame:
    """One captured frame.

    `rgb` is (H, W, 3) uint8. `data`/`content_type` carry the bytes exactly as captured when
    the source had them encoded already (image folder), so they can be sent unchanged.
    `defective` / `defect_mask` are ground truth, known only for the synthetic scene.
    `frame_counter` / `hardware_timestamp_ns` are the camera's own (GenICam sources); `part_id`
    is set only by a source that was told which part is in front of the camera.
    """

    rgb: np.ndarray
    index: int
    captured_at: datetime = field(default_factory=utc_now)
    name: str = ""
    data: bytes | None = None
    content_type: str | None = None
    defective: bool | None = None
    defect_mask: np.ndarray | None = None
    part_id: str | None = None
    frame_counter: int | None = None
    hardware_timestamp_ns: int | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


class FrameSource:
    """Base class: iterate for frames, `close()` to release devices/files (also a context manager)."""

    name = "source"
    live = False  # True for cameras/streams: no end, no --loop

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
