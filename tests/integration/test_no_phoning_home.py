"""No linewatch process opens a connection off the host unless asked.

`inspect` and `serve` run with the default profile (published layout, random weights, the real IS-Net
graph) under `strace -f -e trace=connect`, which sees native code too (onnxruntime's telemetry is C++,
invisible to a Python socket guard). Every connect must go to loopback or a local socket, and nothing
may be written under ~/.cache/Microsoft (onnxruntime's telemetry device id).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_models_published_layout import _cli_env, _frame, published  # noqa: F401 (fixture)
from tests.integration.test_worker_service import good_frame, make_settings, publish_frames, read_results

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
# `... connect(7, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.0.0.1")}, 16) = 0`
INET4 = re.compile(r'sa_family=AF_INET,.*?inet_addr\("([^"]+)"\)')
INET6 = re.compile(r'sa_family=AF_INET6,.*?inet_pton\(AF_INET6, "([^"]+)"')


def off_machine_connects(trace: str) -> list[str]:
    """The connect() lines of an strace log whose address is neither loopback nor a local socket."""
    found = []
    for line in trace.splitlines():
        if "connect(" not in line:
            continue
        match = INET4.search(line) or INET6.search(line)
        if match is None:
            continue  # AF_UNIX, AF_NETLINK, AF_UNSPEC (a UDP socket's disconnect): never leave the machine
        address = ipaddress.ip_address(match.group(1))
        mapped = getattr(address, "ipv4_mapped", None)
        if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
            found.append(line.strip())
    return found


def traced(command: list[str], trace: Path) -> list[str]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is missing: run scripts/install_system_deps.sh (CI does)", pytrace=False)
    return [strace, "-f", "--seccomp-bpf", "-e", "trace=connect", "-o", str(trace), *command]


def bare_env(models: Path, home: Path, **extra: str) -> dict[str, str]:
    """The published layout's environment with a fresh HOME, and without the telemetry switch this
    process has set on itself (the program under test must set it)."""
    home.mkdir()
    env = _cli_env(models, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **extra)
    env.pop("ORT_DISABLE_TELEMETRY", None)
    return env


def assert_stayed_home(trace: Path, home: Path) -> None:
    text = trace.read_text()
    assert "+++ exited with 0 +++" in text, "strace did not follow the program to its end"
    assert off_machine_connects(text) == []
    assert not (home / ".cache" / "Microsoft").exists(), sorted(str(p) for p in home.rglob("*"))


def test_the_checker_sees_a_connect_off_the_machine():
    lines = [
        '12 connect(7, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
        '12 connect(8, {sa_family=AF_INET, sin_port=htons(9092), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '12 connect(9, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1',
        '12 connect(9, {sa_family=AF_INET6, sin6_port=htons(6379), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
        '12 connect(3, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
    ]
    assert off_machine_connects("\n".join(lines)) == [lines[0], lines[2]]


def test_inspect_with_the_default_profile_connects_nowhere(published, tmp_path):  # noqa: F811
    models, _ = published
    home, trace = tmp_path / "home", tmp_path / "inspect.strace"
    command = [sys.executable, "-m", "worker.cli", "inspect", "--profile", "default", "--object", "screw"]
    command += ["--foreground", "isnet", str(_frame(tmp_path / "frame.png"))]  # IS-Net: the onnxruntime pass
    done = subprocess.run(
        traced(command, trace), cwd=REPO, env=bare_env(models, home), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"verdict"' in done.stdout
    assert_stayed_home(trace, home)


def test_serve_with_the_default_profile_connects_only_to_its_broker_and_redis(
    published,  # noqa: F811
    kafka_broker,
    redis_server,
    tmp_path,
):
    models, _ = published
    settings = make_settings(kafka_broker, redis_server.url)
    home, trace, log_path = tmp_path / "home", tmp_path / "serve.strace", tmp_path / "worker.log"
    env = bare_env(
        models,
        home,
        LINEWATCH_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        LINEWATCH_KAFKA__FRAMES_TOPIC=settings.kafka.frames_topic,
        LINEWATCH_KAFKA__RESULTS_TOPIC=settings.kafka.results_topic,
        LINEWATCH_KAFKA__DLQ_TOPIC=settings.kafka.dlq_topic,
        LINEWATCH_KAFKA__GROUP_ID=settings.kafka.group_id,
        LINEWATCH_REDIS__URL=redis_server.url,
        LINEWATCH_MODELS__PROFILE="default",
        LINEWATCH_MODELS__FOREGROUND="isnet",  # SAM's point grid takes minutes on random weights
        LINEWATCH_WORKER__WORKER_ID="traced-worker",
    )
    command = [sys.executable, "-m", "worker.cli", "serve"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(traced(command, trace), cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        sent = publish_frames(settings, [good_frame(i) for i in range(2)])
        results = read_results(settings, sent, timeout_s=600)
        assert {r.frame_id for r in results} == sent, log_path.read_text()[-3000:]
        assert all(r.versions.profile == "default" for r in results)
        worker = _traced_child(proc.pid)
        os.kill(worker, signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:  # a tracee outlives a killed strace: end the worker first
            for child in _children(proc.pid):
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait(10)
    assert_stayed_home(trace, home)
    assert "127.0.0.1" in trace.read_text(), "the trace does not show the broker: strace saw no connect"


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _traced_child(strace_pid: int) -> int:
    """The worker's pid: strace's first child (SIGTERM goes to it, strace follows it out)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = _children(strace_pid)
        if children:
            return children[0]
        time.sleep(0.1)
    raise AssertionError("strace started no child")
