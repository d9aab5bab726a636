"""What a frame brings to the few-shot step: the bank in force for its scope and/or its pool."""

from __future__ import annotations

from dataclasses import dataclass

from worker.inspection.fewshot.bank import PatchBank
from worker.inspection.fewshot.pool import RollingPool


@dataclass(frozen=True, eq=False)
class FewShotContext:
    """bank: the scope's reference bank (None: none); pool: the scope's rolling pool (None: off).

    The pool scores a frame once it holds `pool_min_frames` frames; every frame is added to it after.
    `bank_label` names the bank in results (`versions.reference_bank`).
    """

    bank: PatchBank | None = None
    bank_label: str | None = None
    pool: RollingPool | None = None
    pool_fraction: float = 0.3
    pool_min_frames: int = 4

    @property
    def active(self) -> bool:
        return self.bank is not None or self.pool is not None
