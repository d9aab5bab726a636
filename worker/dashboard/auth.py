"""Who may look and who may write: users and tokens from the settings, roles, CSRF tokens.

Functions over the settings' secret strings; the web app (app.py) applies them. Passwords are
argon2id hashes (`linewatch-dashboard --hash-password` prints one); tokens are SHA-256 digests
(`--hash-token`: a token is long and random, so a fast hash is enough, and it is checked on every API
request). A password or token still in plain text is accepted, with a warning at start, so that an
upgrade locks nobody out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import SecretStr

log = logging.getLogger(__name__)
HASHER = PasswordHasher()  # argon2id with the library's defaults (RFC 9106's second recommendation)
ARGON2_PREFIX = "$argon2"
TOKEN_HASH_PREFIX = "sha256-"  # not `sha256:`: a token entry's first field holds no ':'
# compared with when the user is unknown, so the time taken does not tell which names exist
_NOBODY_HASH = HASHER.hash(secrets.token_urlsafe(16))

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    @property
    def can_write(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class Credentials:
    """Parsed `users` (name -> (password, role)) and `tokens` (token -> principal)."""

    users: dict[str, tuple[str, Role]]
    tokens: dict[str, Principal]

    @property
    def empty(self) -> bool:
        return not self.users and not self.tokens

    @property
    def plain_text_users(self) -> list[str]:
        """Users whose password is stored as plain text (not an argon2 hash)."""
        return sorted(name for name, (stored, _) in self.users.items() if not stored.startswith(ARGON2_PREFIX))

    @property
    def plain_text_tokens(self) -> list[str]:
        """The holders of tokens stored as plain text (not a SHA-256 digest)."""
        return sorted({who.name for token, who in self.tokens.items() if not token.startswith(TOKEN_HASH_PREFIX)})


def _joined(text: str) -> list[str]:
    """Split entries on commas, except inside an entry: an argon2 hash holds `m=..,t=..,p=..`."""
    entries: list[str] = []
    pending = ""
    for piece in text.split(","):
        pending = f"{pending},{piece}" if pending else piece
        if pending.strip() and pending.strip().rpartition(":")[2] not in ROLES:
            continue  # the entry goes on after this comma (or is malformed: reported below)
        entries.append(pending)
        pending = ""
    if pending.strip():
        entries.append(pending)
    return entries


def _entries(secret: SecretStr | None, what: str) -> list[tuple[str, str, str]]:
    if secret is None:
        return []
    entries = []
    for number, raw in enumerate(_joined(secret.get_secret_value()), start=1):
        raw = raw.strip()
        if not raw:
            continue
        # the first field (name, token) has no ':'; the middle one (a password) may
        first, _, rest = raw.partition(":")
        second, _, role = rest.rpartition(":")
        if not first or not second or role not in ROLES:
            # never echo the entry: it holds a password or a token
            raise ValueError(f"dashboard {what}: entry {number} is not `a:b:role` with role viewer or operator")
        entries.append((first, second, role))
    return entries


def parse_credentials(users: SecretStr | None, tokens: SecretStr | None) -> Credentials:
    """users = `name:password:role,...`; tokens = `token:name:role,...`. ValueError names the bad entry."""
    parsed_users = {}
    for name, password, role in _entries(users, "users"):
        parsed_users[name] = (password, role)
    parsed_tokens = {token: Principal(name, role) for token, name, role in _entries(tokens, "tokens")}
    return Credentials(parsed_users, parsed_tokens)  # type: ignore[arg-type]


def hash_password(password: str) -> str:
    """The argon2id hash to put in `dashboard.users` instead of the password."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    return HASHER.hash(password)


def _token_digest(token: str) -> str:
    return TOKEN_HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def hash_token(token: str) -> str:
    """The digest to put in `dashboard.tokens` instead of the token."""
    if len(token) < 16:
        raise ValueError("a token shorter than 16 characters can be guessed: use a long random one")
    return _token_digest(token)


def _password_matches(stored: str, password: str) -> bool:
    if not stored.startswith(ARGON2_PREFIX):  # plain text (deprecated: warned about at start)
        return hmac.compare_digest(stored.encode(), password.encode())
    try:
        return HASHER.verify(stored, password)
    except VerificationError:
        return False
    except InvalidHashError:
        log.warning("a dashboard password hash cannot be read: that user cannot log in")
        return False


def check_password(credentials: Credentials, name: str, password: str) -> Principal | None:
    """Slow on purpose (argon2): call it off the event loop."""
    entry = credentials.users.get(name)
    if entry is None:
        _password_matches(_NOBODY_HASH, password)  # the same work for an unknown name
        return None
    stored, role = entry
    return Principal(name, role) if _password_matches(stored, password) else None


def still_valid(credentials: Credentials, who: Principal) -> bool:
    """Whether a logged-in principal still has a user (or token) with that role in the settings."""
    entry = credentials.users.get(who.name)
    if entry is not None and entry[1] == who.role:
        return True
    return any(token_holder == who for token_holder in credentials.tokens.values())


def warn_about_plain_text(credentials: Credentials) -> None:
    for names, what, option in (
        (credentials.plain_text_users, "passwords", "--hash-password"),
        (credentials.plain_text_tokens, "tokens", "--hash-token"),
    ):
        if names:
            log.warning(
                "DEPRECATED: the dashboard %s of %s are stored as plain text; replace each with what "
                "`linewatch-dashboard %s` prints (plain text will stop being accepted)",
                what,
                ", ".join(names),
                option,
            )


def check_token(credentials: Credentials, token: str) -> Principal | None:
    digest = _token_digest(token)
    for known, principal in credentials.tokens.items():
        given = digest if known.startswith(TOKEN_HASH_PREFIX) else token
        if hmac.compare_digest(known.encode(), given.encode()):
            return principal
    return None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())
