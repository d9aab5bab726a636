"""Reference banks and rolling pools in Redis (the adapter; the math never calls Redis).

Values are raw little-endian arrays with dtype and shape (`encode_array`), never pickle:

  {prefix}:bank:{fingerprint}:{scope}:v{version}   hash {dtype, shape, data, frames, layers, scope, version}
  {prefix}:pool:{fingerprint}:{scope}:seq          counter: frames ever pushed to the scope's pool
  {prefix}:pool:{fingerprint}:{scope}:{slot}       hash {dtype, shape, data, seq}; slot = seq % M (a ring)

Every worker of the group pushes its frames into the same ring and reads back what the others pushed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import redis

from common.settings import RedisSettings
from worker.inspection.fewshot.bank import PatchBank
from worker.inspection.redis_cache import CorruptEntryError, build_redis_client, decode_array, encode_array

# Banks are megabytes: reads and writes get a longer socket timeout than the embedding cache's.
STORE_TIMEOUT_S = 30.0


def glob_escape(text: str) -> str:
    """`text` as a literal in a Redis SCAN MATCH pattern (object names may hold * ? [ ] or \\)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True)
class StoredBank:
    """What `list_banks` says about one stored bank."""

    fingerprint: str
    scope: str
    version: str
    frames: int
    patches: int
    nbytes: int


def open_store(settings: RedisSettings) -> FewShotStore | None:
    """A store on the configured Redis (None when Redis is disabled)."""
    slow = settings.model_copy(update={"socket_timeout_s": max(settings.socket_timeout_s, STORE_TIMEOUT_S)})
    client = build_redis_client(slow)
    return None if client is None else FewShotStore(client, settings.key_prefix)


class FewShotStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    # -- banks -------------------------------------------------------------------------
    def bank_key(self, fingerprint: str, scope: str, version: str) -> str:
        return f"{self.prefix}:bank:{fingerprint}:{scope}:v{version}"

    def put_bank(self, fingerprint: str, scope: str, version: str, bank: PatchBank) -> str:
        key = self.bank_key(fingerprint, scope, version)
        fields = encode_array(bank.features.astype(np.float32))
        fields.update(
            frames=str(bank.frames).encode(),
            layers=",".join(str(i) for i in bank.layers).encode(),
            scope=scope.encode(),
            version=version.encode(),
            fingerprint=fingerprint.encode(),
        )
        self.client.hset(key, mapping=fields)
        return key

    def get_bank(self, fingerprint: str, scope: str, version: str) -> PatchBank | None:
        """The stored bank, None when absent; CorruptEntryError when it is not a well-formed one."""
        fields = self.client.hgetall(self.bank_key(fingerprint, scope, version))
        if not fields:
            return None
        features = decode_array(fields)
        if features.ndim != 3 or features.dtype != np.float32:
            raise CorruptEntryError(f"a bank is a float32 (L, P, C) array, not {features.dtype} {features.shape}")
        try:
            frames = int(fields[b"frames"])
            layers = tuple(int(i) for i in fields[b"layers"].decode().split(",") if i)
        except (KeyError, ValueError) as exc:
            raise CorruptEntryError(f"bank metadata: {exc}") from exc
        return PatchBank(features, frames=frames, layers=layers)

    def has_bank(self, fingerprint: str, scope: str, version: str) -> bool:
        return bool(self.client.exists(self.bank_key(fingerprint, scope, version)))

    def delete_bank(self, fingerprint: str, scope: str, version: str) -> bool:
        return bool(self.client.delete(self.bank_key(fingerprint, scope, version)))

    def list_banks(self, scope: str | None = None) -> list[StoredBank]:
        found = []
        for key in self.client.scan_iter(match=glob_escape(f"{self.prefix}:bank:") + "*", count=500):
            meta = self.client.hmget(key, ["fingerprint", "scope", "version", "frames", "shape"])
            if None in meta:
                continue
            fingerprint, stored_scope, version, frames, shape = (v.decode() for v in meta)
            if scope is not None and stored_scope != scope:
                continue
            layers, patches, channels = (int(n) for n in shape.split(","))
            found.append(
                StoredBank(fingerprint, stored_scope, version, int(frames), patches, layers * patches * channels * 4)
            )
        return sorted(found, key=lambda b: (b.scope, b.fingerprint, b.version))

    # -- rolling pool ----------------------------------------------------------------------
    def _pool_key(self, fingerprint: str, scope: str, suffix: str) -> str:
        return f"{self.prefix}:pool:{fingerprint}:{scope}:{suffix}"

    def pool_push(self, fingerprint: str, scope: str, features: np.ndarray, size: int) -> int:
        """Store one frame's (L, n, C) features in the scope's ring of `size` slots; returns its sequence number."""
        seq = int(self.client.incr(self._pool_key(fingerprint, scope, "seq")))
        fields = encode_array(np.asarray(features, dtype=np.float32))
        fields["seq"] = str(seq).encode()
        self.client.hset(self._pool_key(fingerprint, scope, str(seq % size)), mapping=fields)
        return seq

    def pool_read(
        self, fingerprint: str, scope: str, size: int, after: int = 0
    ) -> tuple[int, list[tuple[int, np.ndarray]]]:
        """(latest sequence number, [(seq, features)] pushed after `after`, oldest first; at most `size`)."""
        latest = int(self.client.get(self._pool_key(fingerprint, scope, "seq")) or 0)
        wanted = range(max(after, latest - size) + 1, latest + 1)
        if not wanted:
            return latest, []
        pipe = self.client.pipeline(transaction=False)
        for seq in wanted:
            pipe.hgetall(self._pool_key(fingerprint, scope, str(seq % size)))
        frames = []
        for fields in pipe.execute():
            if fields and b"seq" in fields and int(fields[b"seq"]) in wanted:  # a slot overwritten meanwhile is skipped
                frames.append((int(fields[b"seq"]), decode_array(fields)))
        return latest, sorted(frames, key=lambda item: item[0])

    def pool_delete(self, fingerprint: str, scope: str) -> int:
        pattern = glob_escape(self._pool_key(fingerprint, scope, "")) + "*"
        keys = list(self.client.scan_iter(match=pattern, count=500))
        return int(self.client.delete(*keys)) if keys else 0
