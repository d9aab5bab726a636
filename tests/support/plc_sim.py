"""A PLC's side of the result handshake on a real asyncua server: it takes a result when ResultReady
rises (records the written values and sets Ack), and clears Ack when ResultReady falls."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import Server, ua

from worker.sinks.aio import AsyncRunner

FIELDS = {
    "Verdict": ua.VariantType.Int16,
    "PartId": ua.VariantType.String,
    "ResultId": ua.VariantType.String,
    "Score": ua.VariantType.Float,
    "ResultReady": ua.VariantType.Boolean,
    "Ack": ua.VariantType.Boolean,
}
INITIAL = {"Verdict": 0, "PartId": "", "ResultId": "", "Score": 0.0, "ResultReady": False, "Ack": False}


class PlcSimulator:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.taken: list[dict[str, Any]] = []
        self.acking = True
        self.runner = AsyncRunner("plc-sim")
        self._task: asyncio.Task | None = None
        self.server: Server | None = None

    def start(self) -> PlcSimulator:
        self.runner.run(self._start(), timeout=30)
        return self

    async def _start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace("urn:test:plc")
        assert ns == 2
        folder = await server.nodes.objects.add_object(ua.NodeId("Inspection", ns), "Inspection")
        self.nodes = {}
        for name, variant in FIELDS.items():
            node = await folder.add_variable(
                ua.NodeId(f"Inspection.{name}", ns), name, ua.Variant(INITIAL[name], variant)
            )
            await node.set_writable()
            self.nodes[name] = node
        await server.start()
        self.server = server
        self._task = asyncio.get_running_loop().create_task(self._logic())

    async def _logic(self) -> None:
        while True:
            ready = await self.nodes["ResultReady"].read_value()
            ack = await self.nodes["Ack"].read_value()
            if ready and not ack and self.acking:
                values = {
                    name: await self.nodes[name].read_data_value()
                    for name in ("Verdict", "PartId", "ResultId", "Score")
                }
                self.taken.append(
                    {name: dv.Value.Value for name, dv in values.items()}
                    | {"types": {name: dv.Value.VariantType.name for name, dv in values.items()}}
                )
                await self.nodes["Ack"].write_value(True)
            elif not ready and ack:
                await self.nodes["Ack"].write_value(False)
            await asyncio.sleep(0.01)

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.server is not None:
            await self.server.stop()
        self.server = None

    def stop(self) -> None:
        self.runner.run(self._stop(), timeout=30)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.runner.close()
