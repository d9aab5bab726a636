"""Process and port helpers shared by the local Kafka and Redis servers."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

_PR_SET_PDEATHSIG = 1


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct TCP ports that are free on ``host`` right now.

    All sockets are held open until every port is picked, so the ports differ.
    (A port can still be taken by someone else before the server binds it; the
    callers retry on "Address already in use".)
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
# process. A server restarted from a short-lived thread (a chaos test) would be
# killed as soon as that thread ends, so all such children are forked from one
# long-lived thread instead.
_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawner_executor() -> ThreadPoolExecutor:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linewatch-infra-spawner")
        return _spawner


def spawn(
    argv: list[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen:
    """Start ``argv`` in its own session, stdout+stderr appended to ``log_path``.

    With ``die_with_parent`` (Linux only) the child gets SIGTERM when this Python
    process dies, even by SIGKILL, so a crashed or killed test run leaves no stray
    servers behind. Start detached servers (``make demo``) with it off.
    """
    if die_with_parent and sys.platform.startswith("linux"):
        return (
            _spawner_executor().submit(_spawn, argv, log_path=log_path, cwd=cwd, env=env, die_with_parent=True).result()
        )
    return _spawn(argv, log_path=log_path, cwd=cwd, env=env, die_with_parent=False)


def _spawn(
    argv: list[str], *, log_path: Path, cwd: Path | None, env: dict[str, str] | None, die_with_parent: bool
) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        log.write(
            f"\n=== linewatch test infra: starting {' '.join(argv)} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        )
        preexec = _set_parent_death_signal if die_with_parent else None
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd) if cwd else None,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
        )


def terminate(proc: subprocess.Popen | None, timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc)
    return proc.returncode


def kill(proc: subprocess.Popen | None) -> int | None:
    """SIGKILL and reap."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    return proc.returncode


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def pid_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def terminate_pid(pid: int, timeout: float) -> None:
    """SIGTERM a process we did not start here (no Popen), then SIGKILL after ``timeout``."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def log_tail(path: Path, max_bytes: int = 6000, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(start, end - max_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return "<no log>"


# Servers still running when the interpreter exits are stopped (tests that forget stop()).
_live: weakref.WeakSet = weakref.WeakSet()
_live_lock = threading.Lock()


def register_live(server) -> None:
    with _live_lock:
        _live.add(server)


def unregister_live(server) -> None:
    with _live_lock:
        _live.discard(server)


@atexit.register
def _stop_all_live() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        try:
            server._atexit_stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class ServerProcess:
    """Stop, crash and restart of a server process started by a subclass's `start()`.

    The subclass sets `_proc` (the Popen), `_port` (None before the first start) and
    `stop_timeout`, and calls `register_live(self)` when it starts.
    """

    _proc: subprocess.Popen | None = None
    _port: int | None = None
    stop_timeout: float = 30.0
    atexit_timeout: float = 10.0  # what a server forgotten by its test gets to stop at interpreter exit

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self):  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> int | None:
        """Clean shutdown: SIGTERM, wait, then SIGKILL. Returns the exit code."""
        proc, self._proc = self._proc, None
        unregister_live(self)
        return terminate(proc, self.stop_timeout if timeout is None else timeout)

    def kill(self) -> int | None:
        """Crash it (SIGKILL)."""
        proc, self._proc = self._proc, None
        unregister_live(self)
        return kill(proc)

    def close(self) -> None:  # pragma: no cover - every subclass has its own (it also removes its files)
        self.stop()

    def _atexit_stop(self) -> None:
        self.stop(timeout=self.atexit_timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def restart(self, down_seconds: float = 0.0, *, hard: bool = False):
        """Stop (SIGTERM, or SIGKILL with `hard`), stay down `down_seconds`, start again on the same port."""
        if self._port is None:
            return self.start()
        self.kill() if hard else self.stop()
        if down_seconds > 0:
            time.sleep(down_seconds)
        return self.start()
