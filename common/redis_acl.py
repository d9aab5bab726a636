"""Who may do what in Redis: one ACL user per role that uses Redis, and nobody else.

| role       | keys (under `redis.key_prefix`)        | what for                                         |
|------------|----------------------------------------|--------------------------------------------------|
| worker     | `emb:*`, `bank:*`, `pool:*`            | prompt embeddings, reference banks (read, write back), pools |
| references | `bank:*`                               | `linewatch-worker references add/list/delete`     |

Each user may run only the commands linewatch sends (hashes, counters, `EXPIRE`, `SCAN`, transactions),
nothing of `@admin` or `@dangerous`, and no pub/sub channel. The producer, the alarm service, the
dashboard and the sinks get no Redis user at all (`warn_if_given_redis_secrets` says so when they are
given one). `acl_rules` gives the rules of each user, as an ACL file line or as `redis-server --user`
arguments.
"""

from __future__ import annotations

import logging

from common.settings import RedisSettings

log = logging.getLogger(__name__)

REDIS_ROLES: dict[str, tuple[str, ...]] = {
    "worker": ("emb", "bank", "pool"),
    "references": ("bank",),
}
_READ = ("hgetall", "hmget", "hstrlen", "exists", "get", "scan")
_WRITE = ("hset", "del", "multi", "exec", "discard")
COMMANDS: dict[str, tuple[str, ...]] = {
    "worker": ("ping", *_READ, *_WRITE, "expire", "incrby"),
    "references": ("ping", *_READ, *_WRITE),
}


def default_redis_user(role: str) -> str:
    return f"linewatch-{role}"


def acl_rules(role: str, prefix: str = "linewatch") -> list[str]:
    """The ACL rules of `role`'s user, after its name, `on` and password: key patterns, then commands."""
    keys = [f"~{prefix}:{kind}:*" for kind in REDIS_ROLES[role]]
    return [*keys, "resetchannels", "-@all", *(f"+{command}" for command in COMMANDS[role])]


def acl_file(passwords: dict[str, str], prefix: str = "linewatch") -> str:
    """An ACL file (`aclfile` in redis.conf): the default user off, one user per role given a password."""
    lines = ["user default off"]
    for role, password in passwords.items():
        lines.append(" ".join([f"user {default_redis_user(role)} on >{password}", *acl_rules(role, prefix)]))
    return "\n".join(lines) + "\n"


def warn_if_given_redis_secrets(settings: RedisSettings, component: str) -> bool:
    """Warn (and return True) when a component that never uses Redis was given its password or signing key."""
    url = settings.url.get_secret_value() if settings.url is not None else ""
    given = [
        name
        for name, present in (
            ("LINEWATCH_REDIS__PASSWORD", settings.password is not None),
            ("LINEWATCH_REDIS__SIGNING_KEY", settings.signing_key is not None),
            ("a password in LINEWATCH_REDIS__URL", "@" in url),
        )
        if present
    ]
    if given:
        log.warning(
            "%s does not use Redis but was given %s: take them out of its environment (only the workers and "
            "`references` need them)",
            component,
            ", ".join(given),
        )
    return bool(given)
