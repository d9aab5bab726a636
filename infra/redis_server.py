"""A real redis-server (Debian's ``redis-server`` package) on a free loopback port, for tests and demos.

server = RedisServer()       # optional password=..., port=...
server.start()               # returns once it answers PING
server.url                   # "redis://127.0.0.1:PORT/0" (with ":password@" if set)
server.kill()                # SIGKILL: no persistence, so all data is gone
server.restart()             # same port
server.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from infra import _proc

HOST = "127.0.0.1"
INSTALL_HINT = (
    "redis-server not found: install it with `apt-get install -y redis-server` (or run scripts/install_system_deps.sh)"
)


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str | None:
    exe = os.environ.get("LINEWATCH_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if exe:
        return exe
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def ping(host: str, port: int, password: str | None = None, timeout: float = 1.0) -> bool:
    """PING over raw RESP (no client library needed); True on +PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            f = sock.makefile("rb")
            if password is not None:
                sock.sendall(_resp_command("AUTH", password))
                if not f.readline().startswith(b"+OK"):
                    return False
            sock.sendall(_resp_command("PING"))
            return f.readline().startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(_proc.ServerProcess):
    """``redis-server --port N --save '' --appendonly no`` bound to 127.0.0.1."""

    atexit_timeout = 5.0  # redis exits at once without persistence

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        work_dir: str | os.PathLike | None = None,
        extra_args: list[str] | None = None,
        die_with_parent: bool = True,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.exe = find_redis_server()
        if self.exe is None:
            raise RedisServerError(INSTALL_HINT)
        self._fixed_port = port is not None
        self._port = port
        self.password = password
        self._owns_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="linewatch-redis-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / "redis.log"
        self.extra_args = list(extra_args or [])
        self.die_with_parent = die_with_parent
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen | None = None
        self.last_start_seconds: float | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("the redis port is picked at the first start()")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [
            self.exe,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.work_dir),
            "--logfile",
            "",  # log to stdout (-> redis.log)
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra_args

    def start(self, timeout: float | None = None) -> RedisServer:
        if self.is_running:
            return self
        timeout = self.startup_timeout if timeout is None else timeout
        attempts = 1 if (self._fixed_port or self._port is not None) else 3
        for attempt in range(1, attempts + 1):
            if self._port is None:
                self._port = _proc.free_ports(1)[0]
            t0 = time.monotonic()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = _proc.spawn(
                self._argv(), log_path=self.log_path, cwd=self.work_dir, die_with_parent=self.die_with_parent
            )
            _proc.register_live(self)
            deadline = t0 + timeout
            while True:
                if self._proc.poll() is not None:
                    text = _proc.log_tail(self.log_path, start=offset)
                    self._proc = None
                    _proc.unregister_live(self)
                    if "Address already in use" in text and attempt < attempts:
                        self._port = None
                        break
                    raise RedisServerError(f"redis-server exited during startup; log {self.log_path}:\n{text}")
                if ping(HOST, self._port, self.password):
                    self.last_start_seconds = time.monotonic() - t0
                    return self
                if time.monotonic() > deadline:
                    _proc.kill(self._proc)
                    self._proc = None
                    _proc.unregister_live(self)
                    raise RedisServerError(
                        f"redis-server did not answer PING in {timeout}s; log {self.log_path}:\n"
                        f"{_proc.log_tail(self.log_path, start=offset)}"
                    )
                time.sleep(0.05)
        raise RedisServerError(f"could not find a free port for redis-server; log {self.log_path}")

    def close(self) -> None:
        self.stop()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __repr__(self) -> str:
        addr = f"{HOST}:{self._port}" if self._port else "not started"
        return f"<RedisServer {addr} running={self.is_running}>"
