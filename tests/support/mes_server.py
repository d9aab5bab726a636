"""A real local HTTP server playing the MES webhook receiver in tests (stdlib http.server in a thread)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.alarms.webhook import SIGNATURE_HEADER, verify_signature


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    status: int | None  # what we answered (None: connection dropped)
    signature_ok: bool

    def json(self) -> Any:
        return json.loads(self.body)


class MesServer:
    """Answers POSTs with the scripted statuses (`script`), then with `default_status`.

    A script entry (or what `decide(body)` returns) is an int status, `"drop"` (close the connection without answering) or a
    tuple `(status, {header: value})`. Every request is recorded in `received`.
    """

    def __init__(
        self,
        secret: str,
        script: list[Any] | None = None,
        default_status: int = 200,
        decide: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.secret = secret
        self.decide = decide  # body -> action, used once the script is exhausted
        self.script: deque[Any] = deque(script or [])
        self.default_status = default_status
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with outer._lock:
                    if outer.script:
                        action = outer.script.popleft()
                    elif outer.decide is not None:
                        action = outer.decide(body)
                    else:
                        action = outer.default_status
                headers: dict[str, str] = {}
                if isinstance(action, tuple):
                    action, headers = action
                record = Received(
                    path=self.path,
                    headers={k: v for k, v in self.headers.items()},
                    body=body,
                    at=time.monotonic(),
                    status=None if action == "drop" else int(action),
                    signature_ok=verify_signature(outer.secret, body, self.headers.get(SIGNATURE_HEADER)),
                )
                with outer._cond:
                    outer.received.append(record)
                    outer._cond.notify_all()
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload = json.dumps({"status": action}).encode()
                self.send_response(int(action))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/mes/alarms"

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.received)

    def __enter__(self) -> MesServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
