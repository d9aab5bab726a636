"""Settings of the operator dashboard (`dashboard.*`; common/settings.py assembles every section)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from common.settings_base import Section


class DashboardSettings(Section):
    """The operator dashboard (`linewatch-worker dashboard`): live results, alarms and feedback in a browser."""

    host: str = Field("127.0.0.1", description="address the dashboard listens on (0.0.0.0 in a container)")
    port: int = Field(8090, ge=1, le=65535, description="HTTP port of the dashboard; `--port` wins")
    group_id: str = Field(
        "linewatch-dashboard", description="consumer group prefix; each replica adds its instance id (all see all)"
    )
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="this replica's name, appended to group_id (default host-pid)",
    )
    state_topic: str = Field(
        "linewatch.dashboard.alarm-state", description="compacted topic of alarm acknowledgements and silences"
    )
    users: SecretStr | None = Field(
        None, description="`name:password:role` entries, comma-separated; role viewer or operator (secret)"
    )
    tokens: SecretStr | None = Field(
        None, description="`token:name:role` entries, comma-separated, for a token login or a Bearer header (secret)"
    )
    session_secret: SecretStr | None = Field(
        None, description="key signing session cookies; set it (the same) on every replica; None = random per start"
    )
    session_max_age_s: int = Field(12 * 3600, ge=60, description="a login lasts this long (one shift)")
    secure_cookie: bool = Field(
        False, description="send the session cookie over HTTPS only (set behind a TLS proxy; on with tls_certfile)"
    )
    tls_certfile: Path | None = Field(None, description="PEM certificate (chain): the dashboard serves HTTPS itself")
    tls_keyfile: Path | None = Field(None, description="PEM private key of tls_certfile")
    max_sessions: int = Field(10_000, ge=1, description="logged-in sessions kept; the oldest end first past it")
    login_max_failures_per_user: int = Field(5, ge=1, description="failed logins of one user name before lockout")
    login_max_failures_per_address: int = Field(
        20, ge=1, description="failed logins from one client address before lockout"
    )
    login_window_s: float = Field(900.0, gt=0.0, description="failed logins are counted over this sliding window")
    login_lockout_s: float = Field(900.0, gt=0.0, description="how long a locked user name or address waits")
    login_checks: int = Field(2, ge=1, description="password checks run at once (argon2id holds 64 MiB each)")
    login_checks_queued: int = Field(
        8, ge=0, description="login attempts waiting for a password check; past it an attempt gets 503"
    )
    trusted_proxies: str = Field(
        "",
        description="comma-separated addresses or networks (10.0.0.0/8) of reverse proxies whose X-Forwarded-For "
        "names the client; empty: the peer is the client",
    )
    max_event_streams: int = Field(64, ge=1, description="live-update (SSE) connections served at once")
    max_body_bytes: int = Field(65_536, ge=1024, description="largest request body accepted (413 above)")
    history_s: float = Field(300.0, gt=0.0, description="seconds of score history kept per camera for the trend")
    results_per_camera: int = Field(40, ge=1, description="latest full results kept per camera for the frame page")
    max_cameras: int = Field(1000, ge=1, description="cameras kept on the page; past it the least recently seen goes")
    alarms_lookback_s: float = Field(86_400.0, ge=0.0, description="alarms raised this long before start are shown")
    frame_cache_entries: int = Field(256, ge=1, description="frames (and overlays) fetched from Kafka kept in memory")
    frame_cache_ttl_s: float = Field(60.0, gt=0.0, description="how long a fetched frame stays cached")
    push_interval_ms: int = Field(250, ge=20, description="how often live updates are pushed to each page")

    @field_validator("users", "tokens", "session_secret", "tls_certfile", "tls_keyfile", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # compose passes `${DASHBOARD_SESSION_SECRET:-}` through as an empty string: that is "unset", not a key
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in value.split(","):
            if entry.strip():
                ipaddress.ip_network(entry.strip(), strict=False)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> DashboardSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("dashboard.tls_certfile and dashboard.tls_keyfile go together: set both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None
