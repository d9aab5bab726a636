"""Who may look and who may write: users and tokens from the settings, roles, CSRF tokens.

Pure functions over the settings' secret strings; the web app (app.py) applies them.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

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


def _entries(secret: SecretStr | None, what: str) -> list[tuple[str, str, str]]:
    if secret is None:
        return []
    entries = []
    for number, raw in enumerate(secret.get_secret_value().split(","), start=1):
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


def check_password(credentials: Credentials, name: str, password: str) -> Principal | None:
    entry = credentials.users.get(name)
    # compare even for an unknown user, so the time taken does not tell which names exist
    expected, role = entry if entry else ("\x00" * 16, "viewer")
    ok = hmac.compare_digest(expected.encode(), password.encode())
    return Principal(name, role) if ok and entry else None


def check_token(credentials: Credentials, token: str) -> Principal | None:
    for known, principal in credentials.tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return principal
    return None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())
