"""A real asyncua client for the tests: reads a camera's result nodes and collects ResultReady events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

NAMESPACE = "urn:linewatch:line"


class EventCollector:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def event_notification(self, event: Any) -> None:
        fields = event.get_event_props_as_fields_dict()
        self.events.append({name: variant.Value for name, variant in fields.items()} | {"received_at": time.time()})


class ResultReader:
    """`async with ResultReader(url) as reader`: `await reader.read(camera)`, `reader.events`."""

    def __init__(self, url: str, *, security: dict[str, Any] | None = None, **auth: str) -> None:
        self.client = Client(url)
        self.security = security  # certificate, private_key, server_certificate (Basic256Sha256, SignAndEncrypt)
        if auth:
            self.client.set_user(auth["username"])
            self.client.set_password(auth["password"])
        self.collector = EventCollector()

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.collector.events

    async def __aenter__(self) -> ResultReader:
        if self.security:
            await self.client.set_security(
                SecurityPolicyBasic256Sha256, mode=ua.MessageSecurityMode.SignAndEncrypt, **self.security
            )
        await self.client.connect()
        self.ns = await self.client.get_namespace_index(NAMESPACE)
        root = self.client.get_node(ua.NodeId("linewatch", self.ns))
        event_type = await self.client.nodes.base_event_type.get_child([f"{self.ns}:ResultReadyEventType"])
        self.subscription = await self.client.create_subscription(50, self.collector)
        await self.subscription.subscribe_events(root, event_type)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def read(self, camera_id: str, *names: str) -> dict[str, Any]:
        nodes = [self.client.get_node(ua.NodeId(f"linewatch/{camera_id}/{name}", self.ns)) for name in names]
        values = await self.client.read_values(nodes)
        return dict(zip(names, values))

    async def state(self) -> str:
        return await self.client.get_node(ua.NodeId("linewatch/SystemState", self.ns)).read_value()

    async def wait_for_events(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.events)} ResultReady events after {timeout_s}s, wanted {count}")
            await asyncio.sleep(0.05)


async def self_signed(folder, name: str, app_uri: str, server: bool) -> tuple[str, str]:
    """(certificate DER path, key PEM path) of a fresh self-signed OPC UA application certificate."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    use = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    await setup_self_signed_certificate(key, cert, app_uri, "127.0.0.1", use, {"commonName": name})
    return str(cert), str(key)
