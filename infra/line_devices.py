"""The line's other ends for tests and demos: Aravis' GigE Vision camera simulator and Mosquitto.

* `FakeGigECamera`: `arv-fake-gv-camera-0.8` (Debian's aravis-tools) on the loopback interface.
  GigE Vision answers on UDP port 3956 of the interface's address, so one simulator runs per
  machine at a time; `lost_per_thousand` makes it lose stream packets (frames then go missing).
* `MosquittoBroker`: Debian's `mosquitto` on a free 127.0.0.1 port, anonymous or with a
  password file (`users`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from infra import _proc

HOST = "127.0.0.1"
GVCP_PORT = 3956
CAMERA_HINT = "the GigE Vision simulator arv-fake-gv-camera-0.8 is missing: bash scripts/install_system_deps.sh"
MOSQUITTO_HINT = "mosquitto is missing: bash scripts/install_system_deps.sh (Debian package mosquitto)"


class LineDeviceError(RuntimeError):
    pass


def gvcp_discovery(host: str = HOST, timeout: float = 0.3) -> bool:
    """A GigE Vision device answers a GVCP DISCOVERY_CMD on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(bytes([0x42, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01]), (host, GVCP_PORT))
            data, _ = sock.recvfrom(1024)
        except OSError:
            return False
    return len(data) >= 8 and data[2:4] == b"\x00\x03"  # DISCOVERY_ACK


class FakeGigECamera(_proc.ServerProcess):
    """`arv-fake-gv-camera-0.8 -i 127.0.0.1 -s SERIAL [-r LOST]`; `.address` is what Aravis opens."""

    stop_timeout = 5.0

    def __init__(self, *, serial: str = "LW0001", lost_per_thousand: int = 0, work_dir: Path | None = None) -> None:
        self.exe = shutil.which("arv-fake-gv-camera-0.8")
        if self.exe is None:
            raise LineDeviceError(CAMERA_HINT)
        self.serial = serial
        self.lost_per_thousand = lost_per_thousand
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="linewatch-camera-"))
        self.log_path = self.work_dir / "fake-camera.log"
        self._proc: subprocess.Popen | None = None
        self._port = GVCP_PORT

    @property
    def address(self) -> str:
        return HOST

    def start(self, timeout: float = 10.0) -> FakeGigECamera:
        if self.is_running:
            return self
        if gvcp_discovery():
            raise LineDeviceError(f"another GigE Vision device already answers on {HOST}:{GVCP_PORT}")
        argv = [self.exe, "-i", HOST, "-s", self.serial]
        if self.lost_per_thousand:
            argv += ["-r", str(self.lost_per_thousand)]
        self._proc = _proc.spawn(argv, log_path=self.log_path, cwd=self.work_dir)
        _proc.register_live(self)
        deadline = time.monotonic() + timeout
        while not gvcp_discovery():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LineDeviceError(
                    f"the camera simulator did not answer; log {self.log_path}:\n{_proc.log_tail(self.log_path)}"
                )
            time.sleep(0.05)
        return self

    def close(self) -> None:
        self.stop()


def self_signed_pem(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, the certificate its own CA (what clients trust)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class MosquittoBroker(_proc.ServerProcess):
    """Mosquitto on 127.0.0.1:<free port>; `users` {name: password} turns anonymous access off, `tls`
    (certificate, key) PEM files make the listener TLS-only."""

    stop_timeout = 5.0

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.tls = tls
        self.exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if self.exe is None:
            raise LineDeviceError(MOSQUITTO_HINT)
        self.users = dict(users or {})
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="linewatch-mosquitto-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / "mosquitto.log"
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise LineDeviceError("the port is picked at the first start()")
        return self._port

    def _config(self) -> Path:
        lines = [f"listener {self._port} {HOST}", "persistence false", "log_dest stdout"]
        if self.tls is not None:
            lines += [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read the test's private files
        if self.users:
            passwords = self.work_dir / "passwords"
            passwords.write_text("")
            for name, password in self.users.items():
                subprocess.run(
                    [
                        shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd",
                        "-b",
                        str(passwords),
                        name,
                        password,
                    ],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        path = self.work_dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        if self.is_running:
            return self
        if self._port is None:
            self._port = _proc.free_ports(1)[0]
        self._proc = _proc.spawn([self.exe, "-c", str(self._config())], log_path=self.log_path, cwd=self.work_dir)
        _proc.register_live(self)
        deadline = time.monotonic() + timeout
        while not _proc.port_is_open(HOST, self._port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LineDeviceError(f"mosquitto did not start; log {self.log_path}:\n{_proc.log_tail(self.log_path)}")
            time.sleep(0.05)
        return self

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)
