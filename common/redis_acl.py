"""Who may do what in Redis: one ACL user per role that uses Redis, and nobody else.

| role       | keys (under `redis.key_prefix`)        | what for                                         |
|------------|----------------------------------------|--------------------------------------------------|
| worker     | `emb:*`, `bank:*`, `pool:*`            | prompt embeddings, reference banks (read, write back), pools |
| references | `bank:*`                               | `linewatch-worker references add/list/delete`     |

Each user may run only the commands linewatch sends (hashes, counters, `EXPIRE`, `SCAN`, transactions),
nothing of `@admin` or `@dangerous`, and no pub/sub channel. The producer, the alarm service, the
dashboard and the sinks get no Redis user at all. `acl_rules` gives the rules of each user, as an ACL file
line or as `redis-server --user` arguments.
"""

from __future__ import annotations

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
