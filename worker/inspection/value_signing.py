"""Arrays kept in Redis are signed by whoever writes them and checked by whoever reads them.

Anyone who can reach Redis could otherwise swap a prompt embedding or a reference bank and blind a
line. With `redis.signing_key` set, every array is stored with `sig` = HMAC-SHA256 over its Redis key
name, dtype, shape, bytes and metadata fields, and a value without a valid `sig` is refused: an
embedding is then computed again (and stored signed over the bad one), a bank or pool frame is not
used. The key name is in the MAC, so a valid value copied under another key (a normal prompt's
embedding under an anomalous prompt's key) is refused too. Without a key, values are not signed and
only their dtype, shape and size are checked: `require_signing_key` refuses that unless
`redis.allow_unsigned` is true, and logs an error at every start when it is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping

from common.settings import RedisSettings

log = logging.getLogger(__name__)

SIGNATURE_FIELD = "sig"
SIGNED_FIELDS = ("dtype", "shape", "data")


class UnsignedRedisRefused(RuntimeError):
    """Redis is configured without a signing key, and `redis.allow_unsigned` is false."""


def require_signing_key(settings: RedisSettings) -> None:
    """Refuse Redis without a signing key unless `allow_unsigned`; then say so loudly, at every start."""
    if settings.url is None or settings.signing_key is not None:
        return
    if not settings.allow_unsigned:
        raise UnsignedRedisRefused(
            "Redis values would not be signed: set LINEWATCH_REDIS__SIGNING_KEY (the same on every worker and on "
            "`references`), or LINEWATCH_REDIS__ALLOW_UNSIGNED=true on a laptop only"
        )
    log.error(
        "UNSIGNED REDIS VALUES: anyone who can write to Redis can change what the worker scores with; "
        "set LINEWATCH_REDIS__SIGNING_KEY (the same on every worker and on `references`)"
    )


class RefusedValue(ValueError):
    """A Redis value that must not be used; `reason` is a short label for metrics and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _field(fields: Mapping[bytes | str, bytes], name: str) -> bytes:
    value = fields.get(name.encode(), fields.get(name))  # type: ignore[call-overload]
    return value if isinstance(value, bytes) else b""


class ValueSigner:
    """Signs and checks the fields of one Redis hash (no key: nothing is signed or checked)."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key or None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def _mac(self, redis_key: str, fields: Mapping[bytes | str, bytes], extra: Iterable[str]) -> str:
        assert self._key is not None
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (redis_key.encode(), *(_field(fields, name) for name in (*SIGNED_FIELDS, *extra))):
            mac.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two field splits sign alike
            mac.update(part)
        return mac.hexdigest()

    def sign(self, redis_key: str, fields: dict[str, bytes], extra: Iterable[str] = ()) -> dict[str, bytes]:
        """`fields` with their signature added (unchanged without a key)."""
        if self._key is None:
            return fields
        return fields | {SIGNATURE_FIELD: self._mac(redis_key, fields, extra).encode("ascii")}

    def check(self, redis_key: str, fields: Mapping[bytes | str, bytes], extra: Iterable[str] = ()) -> None:
        """RefusedValue("unsigned" | "bad_signature") unless `fields` carry this key's signature."""
        if self._key is None:
            return
        given = _field(fields, SIGNATURE_FIELD)
        if not given:
            raise RefusedValue("unsigned", f"{redis_key}: no signature")
        if not hmac.compare_digest(given, self._mac(redis_key, fields, extra).encode("ascii")):
            raise RefusedValue("bad_signature", f"{redis_key}: signature does not match")


def check_size(redis_key: str, nbytes: int, cap: int) -> None:
    if nbytes > cap:
        raise RefusedValue("too_large", f"{redis_key}: {nbytes} bytes, over the {cap}-byte cap")
