"""The PLC sink: each verdict written into existing OPC UA nodes of a PLC (or MES), with a handshake.

Per result: wait until the PLC's Ack is false (it took the previous one), write result id, part id,
score and verdict with explicit OPC UA types, set ResultReady, wait for Ack (`ack_timeout_s`),
then clear ResultReady. A result the PLC did not acknowledge is not delivered: it is retried, in
order. The connection is re-opened after any failure; after `failures_to_open` failures in a row
a circuit breaker stops trying for `open_for_s` (the results wait in Kafka meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from common.schemas import InspectionResult
from worker.alarms.events import AlarmEvent
from worker.sinks.aio import AsyncRunner
from worker.sinks.loop import SinkUnavailable
from worker.sinks.settings import PlcClientSettings
from worker.sinks.verdict import LineVerdict

log = logging.getLogger(__name__)

POLL_S = 0.02


class CircuitBreaker:
    """Closed until `failures_to_open` failures in a row; then open (refusing) for `open_for_s`."""

    def __init__(self, failures_to_open: int, open_for_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = failures_to_open
        self.open_for_s = open_for_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self.clock() - self.opened_at >= self.open_for_s:
            self.opened_at = None  # half open: one attempt decides
            self.failures = self.failures_to_open - 1
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failures_to_open and self.opened_at is None:
            self.opened_at = self.clock()
            log.warning("PLC circuit breaker open for %gs after %d failures", self.open_for_s, self.failures)


def verdict_variant(verdict: LineVerdict, variant_type: str) -> ua.Variant:
    """The verdict in the PLC's own type: Boolean true = OK, Int16/Int32 1 = OK 2 = NG 0 = none, String OK/NG."""
    if variant_type == "Boolean":
        return ua.Variant(verdict.state == "OK", ua.VariantType.Boolean)
    if variant_type == "String":
        return ua.Variant(verdict.state, ua.VariantType.String)
    return ua.Variant(verdict.result_state, getattr(ua.VariantType, variant_type))


class PlcSink:
    name = "plc"

    def __init__(self, settings: PlcClientSettings) -> None:
        settings.check()
        self.settings = settings
        self.breaker = CircuitBreaker(settings.failures_to_open, settings.open_for_s)
        self.runner = AsyncRunner("opcua-plc")
        self.client: Client | None = None
        self.handshakes = 0

    async def _connect(self) -> Client:
        s = self.settings
        client = Client(s.endpoint, timeout=max(2.0, s.ack_timeout_s))
        if s.username:
            client.set_user(s.username)
            client.set_password(s.password.get_secret_value() if s.password else "")
        if s.security_mode != "None":
            mode = getattr(ua.MessageSecurityMode, s.security_mode)
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                str(s.certificate),
                str(s.private_key),
                server_certificate=str(s.server_certificate) if s.server_certificate else None,
                mode=mode,
            )
        await client.connect()
        log.info("connected to the PLC at %s", s.endpoint)
        return client

    async def _disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception as exc:  # the link is gone already
                log.debug("PLC disconnect: %s", exc)

    async def _wait_ack(self, node: Any, wanted: bool, what: str) -> None:
        deadline = time.monotonic() + self.settings.ack_timeout_s
        while await node.read_value() is not wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PLC {what} within {self.settings.ack_timeout_s:g}s")
            await asyncio.sleep(POLL_S)

    async def _handshake(self, verdict: LineVerdict) -> None:
        s = self.settings
        if self.client is None:
            self.client = await self._connect()
        node = self.client.get_node
        ready, ack = node(s.result_ready_node), node(s.ack_node)
        await self._wait_ack(ack, False, "did not clear Ack of the previous result")
        writes: list[tuple[str, ua.Variant]] = [(s.verdict_node, verdict_variant(verdict, s.verdict_type))]
        if s.result_id_node:
            writes.append((s.result_id_node, ua.Variant(verdict.result_id, ua.VariantType.String)))
        if s.part_id_node:
            writes.append((s.part_id_node, ua.Variant(verdict.part_id or "", ua.VariantType.String)))
        if s.score_node:
            writes.append((s.score_node, ua.Variant(verdict.score, ua.VariantType.Float)))
        for node_id, variant in writes:
            await node(node_id).write_value(ua.DataValue(variant))
        await ready.write_value(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
        try:
            await self._wait_ack(ack, True, f"did not acknowledge result {verdict.result_id}")
        finally:
            await ready.write_value(ua.DataValue(ua.Variant(False, ua.VariantType.Boolean)))

    async def _deliver(self, verdict: LineVerdict) -> None:
        try:
            await self._handshake(verdict)
        except BaseException:
            await self._disconnect()
            raise

    def deliver_result(self, verdict: LineVerdict, result: InspectionResult) -> None:
        if not self.breaker.allow():
            raise SinkUnavailable("PLC circuit breaker open")
        try:
            self.runner.run(self._deliver(verdict), timeout=3 * self.settings.ack_timeout_s + 10)
        except (OSError, TimeoutError, asyncio.TimeoutError, ua.UaError, ConnectionError) as exc:
            self.breaker.failure()
            raise SinkUnavailable(f"PLC at {self.settings.endpoint}: {type(exc).__name__}: {exc}") from exc
        self.breaker.success()
        self.handshakes += 1

    def deliver_alarm(self, event: AlarmEvent) -> None:  # verdicts only
        return None

    def close(self) -> None:
        try:
            self.runner.run(self._disconnect(), timeout=10)
        finally:
            self.runner.close()
