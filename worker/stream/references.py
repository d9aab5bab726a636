"""Reference banks and rolling pools inside a worker: what the control topic announces, loaded from
Redis and kept in memory, and the `FewShotContext` each frame takes to the Inspector.

The control follower calls `announced` for every record it applies (follower thread): a new
`references` version is read from Redis right then, so every worker uses it within a poll of the
topic. Banks stay in memory: a Redis restart does not take them from a running worker, and
`heal` (every HEAL_INTERVAL_S, on the inference thread) writes a bank back to Redis when Redis lost it, so a worker that
starts later finds it again.

Pools (`models.pool_frames` > 0) are per (camera, object): a frame is scored against the pool,
then pushed to the shared ring in Redis; the ring is read back every `models.pool_refresh_s`.

A bank or pool frame that Redis hands back unsigned, too large or not of the model's layers and
channels is refused (counted through `on_refused`, logged): the scope goes on as if it had no bank,
and its frames are still judged zero-shot instead of failing one by one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.control import ControlRecord, scope_key
from common.settings import ModelSettings
from worker.inspection.value_signing import RefusedValue

if TYPE_CHECKING:  # the fewshot package imports torch: only a worker that serves loads it
    from worker.inspection.fewshot.bank import PatchBank
    from worker.inspection.fewshot.context import FewShotContext
    from worker.inspection.fewshot.store import FeatureShape, FewShotStore

log = logging.getLogger(__name__)

RETRY_LOAD_S = 2.0  # an announced bank not found in Redis is looked for again this often (inference thread)
HEAL_INTERVAL_S = 10.0  # how often the banks in memory are checked against Redis (an EXISTS each)


class _Pool:
    """One scope's pool: the frames in memory and, by ring sequence number, what Redis holds of it."""

    def __init__(self, size: int, push) -> None:
        from worker.inspection.fewshot.pool import RollingPool

        self.local = RollingPool(size, on_add=push)
        self.by_seq: dict[float, object] = {}
        self.seen = 0  # the last ring sequence number read back
        self.read_at = float("-inf")


class ReferenceBanks:
    def __init__(self, models: ModelSettings, store: FewShotStore | None) -> None:
        self.models = models
        self.store = store
        self.fingerprint: str | None = None
        self._lock = threading.Lock()
        self._announced: dict[str, str] = {}  # scope -> bank version in force
        self._banks: dict[tuple[str, str], PatchBank] = {}
        self._pools: dict[str, _Pool] = {}
        self._healed_at = time.monotonic()
        self._tried_at: dict[tuple[str, str], float] = {}
        self.shape: FeatureShape | None = None  # the model's layers and channels: others are refused
        self.on_refused: Callable[[str, str], None] | None = None  # (bank | pool, reason), e.g. a metric

    def bind(self, fingerprint: str, shape: FeatureShape | None = None) -> None:
        """The model fingerprint is known once the models are loaded: banks are keyed by it."""
        self.fingerprint, self.shape = fingerprint, shape
        for scope, version in list(self._announced.items()):
            self._load(scope, version)

    # -- follower thread ------------------------------------------------------------------
    def announced(self, scope: str, record: ControlRecord | None) -> None:
        """A record was applied (None: deleted): load its bank version if it is new."""
        version = record.references.version if record is not None and record.references is not None else None
        with self._lock:
            if version is None:
                self._announced.pop(scope, None)
            else:
                self._announced[scope] = version
        if version is not None and self.fingerprint is not None:
            self._load(scope, version)

    def _load(self, scope: str, version: str) -> None:
        if (scope, version) in self._banks:
            return
        first_try = (scope, version) not in self._tried_at
        self._tried_at[(scope, version)] = time.monotonic()
        if self.store is None:
            log.warning("%s: reference bank v%s announced, but Redis is disabled", scope, version)
            return
        started = time.monotonic()
        try:
            bank = self.store.get_bank(self.fingerprint, scope, version, self.shape)
        except RefusedValue as exc:  # the scope goes on without a bank (zero-shot and its pool)
            if first_try:
                log.warning("%s: reference bank v%s refused (%s): %s", scope, version, exc.reason, exc)
                self._refused("bank", exc.reason)
            return
        except Exception as exc:  # Redis down: keep the bank we had
            if first_try:
                log.warning("%s: reference bank v%s not loaded (%s: %s)", scope, version, type(exc).__name__, exc)
            return
        if bank is None:
            if first_try:
                log.warning("%s: reference bank v%s for model %s is not in Redis", scope, version, self.fingerprint)
            return
        with self._lock:
            self._banks = {k: b for k, b in self._banks.items() if k[0] != scope}  # older versions go
            self._banks[(scope, version)] = bank
        log.info(
            "%s: reference bank v%s loaded (%d frames, %d patches, %.1f MB) in %.0f ms",
            scope,
            version,
            bank.frames,
            bank.patches,
            bank.nbytes / 1e6,
            1000 * (time.monotonic() - started),
        )

    def heal(self) -> int:
        """Write the banks in memory back to Redis where Redis lost them (a restart); returns how many."""
        if self.store is None or self.fingerprint is None:
            return 0
        healed = 0
        with self._lock:
            banks = list(self._banks.items())
        for (scope, version), bank in banks:
            try:
                if not self.store.has_bank(self.fingerprint, scope, version):
                    self.store.put_bank(self.fingerprint, scope, version, bank)
                    healed += 1
                    log.info("%s: reference bank v%s written back to Redis", scope, version)
            except Exception as exc:
                log.warning("reference banks not checked (%s: %s)", type(exc).__name__, exc)
                break
        return healed

    # -- inference thread -----------------------------------------------------------------
    def bank(self, scope: str | None) -> PatchBank | None:
        with self._lock:
            version = self._announced.get(scope) if scope is not None else None
            bank = self._banks.get((scope, version)) if version is not None else None
        if version is not None and bank is None and self.fingerprint is not None:
            if time.monotonic() - self._tried_at.get((scope, version), float("-inf")) < RETRY_LOAD_S:
                return None
            self._load(scope, version)  # announced while Redis was away: try again
            with self._lock:
                bank = self._banks.get((scope, version))
        return bank

    def context(self, scope: str | None, camera_id: str, object_name: str) -> FewShotContext | None:
        """The frame's few-shot inputs: the bank in force for `scope` and the pool of (camera, object)."""
        if self._banks and time.monotonic() - self._healed_at >= HEAL_INTERVAL_S:
            self._healed_at = time.monotonic()
            self.heal()
        bank = self.bank(scope)
        with self._lock:
            label = f"{scope}@v{self._announced.get(scope)}" if bank is not None else None
        pool = self._pool(scope_key(camera_id, object_name)) if self.models.pool_frames > 0 else None
        if bank is None and pool is None:
            return None
        from worker.inspection.fewshot.context import FewShotContext

        return FewShotContext(
            bank=bank,
            bank_label=label,
            pool=pool,
            pool_fraction=self.models.pool_fraction,
            pool_min_frames=self.models.pool_min_frames,
        )

    def _pool(self, scope: str):
        state = self._pools.get(scope)
        if state is None:
            state = self._pools[scope] = _Pool(self.models.pool_frames, lambda f, s=scope: self._pushed(s, f))
        if self.store is not None and self.fingerprint is not None:
            if time.monotonic() - state.read_at >= self.models.pool_refresh_s:
                self._refresh(scope, state)
        return state.local

    def _pushed(self, scope: str, features) -> None:
        """A frame joined its pool in memory: push it to the shared ring for the other workers."""
        state = self._pools[scope]
        seq = max(state.by_seq, default=state.seen) + 1e-3  # local order while Redis is away
        if self.store is not None and self.fingerprint is not None:
            try:
                seq = self.store.pool_push(self.fingerprint, scope, features, self.models.pool_frames)
            except Exception as exc:
                log.warning("%s: pool frame kept in memory only (%s: %s)", scope, type(exc).__name__, exc)
        state.by_seq[seq] = features

    def _refresh(self, scope: str, state: _Pool) -> None:
        """Read what the other workers pushed since the last read; keep the newest M frames."""
        state.read_at = time.monotonic()
        refused: list[RefusedValue] = []
        try:
            latest, frames = self.store.pool_read(
                self.fingerprint, scope, self.models.pool_frames, state.seen, self.shape, refused
            )
        except Exception as exc:
            log.warning("%s: pool not read back from Redis (%s: %s)", scope, type(exc).__name__, exc)
            return
        for problem in refused:
            log.warning("%s: pool frame refused (%s): %s", scope, problem.reason, problem)
            self._refused("pool", problem.reason)
        state.by_seq.update(frames)
        state.seen = latest
        newest = sorted(state.by_seq.items(), key=lambda item: item[0])[-self.models.pool_frames :]
        state.by_seq = dict(newest)
        state.local.replace([features for _, features in newest])

    def _refused(self, what: str, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(what, reason)

    def memory(self) -> dict[str, int]:
        """Bytes held: banks and pools (the docs' memory figures come from the same sums)."""
        with self._lock:
            banks = sum(bank.nbytes for bank in self._banks.values())
        return {"banks": banks, "pools": sum(state.local.nbytes for state in self._pools.values())}
