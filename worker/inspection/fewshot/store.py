"""Reference banks and rolling pools in Redis (the adapter; the math never calls Redis).

Values are raw little-endian arrays with dtype and shape (`encode_array`), never pickle:

  {prefix}:bank:{fingerprint}:{scope}:v{version}   hash {dtype, shape, data, frames, layers, scope, version, sig}
  {prefix}:pool:{fingerprint}:{scope}:seq          counter: frames ever pushed to the scope's pool
  {prefix}:pool:{fingerprint}:{scope}:{slot}       hash {dtype, shape, data, seq, sig}; slot = seq % M (a ring)

Every worker of the group pushes its frames into the same ring and reads back what the others pushed.
Nothing read back is used unchecked: its size (before it is decoded), signature (value_signing.py), dtype
and shape (the model's layers and channels, when the caller names them) must hold, or RefusedValue says why.
Banks and pools have no TTL: Redis must not evict them (docs: Security, Redis integrity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import redis

from common.settings import RedisSettings
from worker.inspection.fewshot.bank import PatchBank
from worker.inspection.redis_cache import CorruptEntryError, build_redis_client, decode_array, encode_array
from worker.inspection.value_signing import RefusedValue, ValueSigner, check_size, require_signing_key

BANK_FIELDS = ("frames", "layers", "scope", "version", "fingerprint")  # signed with the array
MB = 1 << 20


@dataclass(frozen=True)
class FeatureShape:
    """What the model makes: patch features of these CLIP blocks, `channels` wide."""

    layers: tuple[int, ...]
    channels: int

    def check(self, redis_key: str, features: np.ndarray, layers: tuple[int, ...] | None = None) -> None:
        if layers is not None and tuple(layers) != tuple(self.layers):
            raise RefusedValue("wrong_shape", f"{redis_key}: layers {layers}, the model uses {self.layers}")
        if features.shape[0] != len(self.layers) or features.shape[-1] != self.channels:
            expected = f"({len(self.layers)}, *, {self.channels})"
            raise RefusedValue("wrong_shape", f"{redis_key}: shape {features.shape}, the model makes {expected}")


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
    """A store on the configured Redis (None when Redis is disabled); without a signing key, see
    `require_signing_key`."""
    require_signing_key(settings)
    slow = settings.model_copy(update={"socket_timeout_s": max(settings.socket_timeout_s, STORE_TIMEOUT_S)})
    client = build_redis_client(slow)
    if client is None:
        return None
    return FewShotStore(
        client,
        settings.key_prefix,
        ValueSigner(settings.signing_key_bytes()),
        max_bank_bytes=int(settings.max_bank_mb * MB),
        max_pool_frame_bytes=int(settings.max_pool_frame_mb * MB),
    )


class FewShotStore:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        signer: ValueSigner | None = None,
        *,
        max_bank_bytes: int = 1024 * MB,
        max_pool_frame_bytes: int = 64 * MB,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.signer = signer or ValueSigner(None)
        self.max_bank_bytes, self.max_pool_frame_bytes = max_bank_bytes, max_pool_frame_bytes

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
        pipe = self.client.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping=self.signer.sign(key, fields, BANK_FIELDS))
        pipe.execute()
        return key

    def get_bank(
        self, fingerprint: str, scope: str, version: str, expected: FeatureShape | None = None
    ) -> PatchBank | None:
        """The stored bank, None when absent; RefusedValue when it is too large, unsigned, not a
        well-formed (L, P, C) float32 array or not of the `expected` model's layers and channels."""
        key = self.bank_key(fingerprint, scope, version)
        check_size(key, int(self.client.hstrlen(key, "data")), self.max_bank_bytes)  # before reading it
        fields = self.client.hgetall(key)
        if not fields:
            return None
        self.signer.check(key, fields, BANK_FIELDS)
        try:
            features = decode_array(fields)
            if features.ndim != 3 or features.dtype != np.float32:
                raise CorruptEntryError(f"a bank is a float32 (L, P, C) array, not {features.dtype} {features.shape}")
            frames = int(fields[b"frames"])
            layers = tuple(int(i) for i in fields[b"layers"].decode().split(",") if i)
        except (CorruptEntryError, KeyError, ValueError) as exc:
            raise RefusedValue("corrupt", f"{key}: {exc}") from None
        if len(layers) != features.shape[0]:
            raise RefusedValue("corrupt", f"{key}: {len(layers)} layers named for {features.shape[0]} stored")
        if expected is not None:
            expected.check(key, features, layers)
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
        key = self._pool_key(fingerprint, scope, str(seq % size))
        pipe = self.client.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping=self.signer.sign(key, fields, ("seq",)))
        pipe.execute()
        return seq

    def pool_read(
        self,
        fingerprint: str,
        scope: str,
        size: int,
        after: int = 0,
        expected: FeatureShape | None = None,
        refused: list[RefusedValue] | None = None,
    ) -> tuple[int, list[tuple[int, np.ndarray]]]:
        """(latest sequence number, [(seq, features)] pushed after `after`, oldest first; at most `size`).
        A frame that does not check out is left out (and appended to `refused`)."""
        latest = int(self.client.get(self._pool_key(fingerprint, scope, "seq")) or 0)
        wanted = range(max(after, latest - size) + 1, latest + 1)
        if not wanted:
            return latest, []
        keys = [self._pool_key(fingerprint, scope, str(seq % size)) for seq in wanted]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        frames = []
        for key, fields in zip(keys, pipe.execute()):
            if not fields or b"seq" not in fields:
                continue
            try:
                check_size(key, len(fields.get(b"data", b"")), self.max_pool_frame_bytes)
                self.signer.check(key, fields, ("seq",))
                seq = int(fields[b"seq"])
                if seq not in wanted:  # a slot overwritten meanwhile is skipped
                    continue
                features = decode_array(fields)
                if features.ndim != 3 or features.dtype != np.float32:
                    raise RefusedValue("corrupt", f"{key}: {features.dtype} {features.shape}, not float32 (L, n, C)")
                if expected is not None:
                    expected.check(key, features)
            except (CorruptEntryError, ValueError) as exc:
                problem = exc if isinstance(exc, RefusedValue) else RefusedValue("corrupt", f"{key}: {exc}")
                if refused is not None:
                    refused.append(problem)
                continue
            frames.append((seq, features))
        return latest, sorted(frames, key=lambda item: item[0])

    def pool_delete(self, fingerprint: str, scope: str) -> int:
        pattern = glob_escape(self._pool_key(fingerprint, scope, "")) + "*"
        keys = list(self.client.scan_iter(match=pattern, count=500))
        return int(self.client.delete(*keys)) if keys else 0
