"""The OPC UA server sink: per camera the latest result, in the spirit of OPC 40100 (Machine Vision).

Address space (namespace `opcua.namespace`, string NodeIds a PLC or MES can hard-wire):

    Objects/Linewatch                        ns=<i>;s=linewatch
        SystemState, SystemStateReason       healthy | degraded | faulted, and why
        Cameras/<camera id>                  ns=<i>;s=linewatch/<camera id>
            ResultId, PartId, ProductId, Recipe, Lot, FrameCounter, ResultState (Int32: 0 none,
            1 OK, 2 NG), Verdict (OK/NG/NONE), Score, ThresholdVersion, CaptureTime,
            ProcessedTime, ProcessingTimeMs, DeliveryTimeMs, Late, ResultCount
                                             ns=<i>;s=linewatch/<camera id>/<name>

Every result raises a `ResultReadyEventType` event (ResultId, PartId, CameraId, ResultState,
Verdict, Score, Late, CaptureTime, ProcessingTimeMs, DeliveryTimeMs) from the Linewatch object, after the variables hold the new values.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from common.bounded import BoundedMap
from common.schemas import InspectionResult
from worker.alarms.events import AlarmEvent
from worker.sinks.aio import AsyncRunner
from worker.sinks.loop import SinkUnavailable
from worker.sinks.settings import OpcUaServerSettings
from worker.sinks.verdict import LineVerdict

log = logging.getLogger(__name__)

# The server's ApplicationUri: its certificate's subjectAltName carries it for clients that check
APPLICATION_URI = "urn:linewatch:opcua-server"
_VT = ua.VariantType
# name -> (variant type, value of a LineVerdict)
RESULT_VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "ResultId": (_VT.String, lambda v: v.result_id),
    "PartId": (_VT.String, lambda v: v.part_id or ""),
    "ProductId": (_VT.String, lambda v: v.product_id),
    "Recipe": (_VT.String, lambda v: v.recipe or ""),
    "Lot": (_VT.String, lambda v: v.lot or ""),
    "FrameCounter": (_VT.Int64, lambda v: -1 if v.frame_counter is None else v.frame_counter),
    "ResultState": (_VT.Int32, lambda v: v.result_state),
    "Verdict": (_VT.String, lambda v: v.state),
    "Score": (_VT.Double, lambda v: v.score),
    "ThresholdVersion": (_VT.String, lambda v: v.threshold_version),
    "CaptureTime": (_VT.DateTime, lambda v: v.captured_at),
    "ProcessedTime": (_VT.DateTime, lambda v: v.processed_at),
    "ProcessingTimeMs": (_VT.Double, lambda v: v.processing_ms),
    "DeliveryTimeMs": (_VT.Double, lambda v: v.delivery_ms),
    "Late": (_VT.Boolean, lambda v: v.late),
}
EVENT_FIELDS = [
    ("ResultId", _VT.String),
    ("PartId", _VT.String),
    ("CameraId", _VT.String),
    ("ResultState", _VT.Int32),
    ("Verdict", _VT.String),
    ("Score", _VT.Double),
    ("Late", _VT.Boolean),
    ("CaptureTime", _VT.DateTime),
    ("ProcessingTimeMs", _VT.Double),
    ("DeliveryTimeMs", _VT.Double),
]
_POLICIES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


class PasswordUsers(UserManager):
    """`name:password` pairs; anonymous clients only when the settings allow them."""

    def __init__(self, entries: str, anonymous: bool) -> None:
        self.passwords = dict(entry.strip().split(":", 1) for entry in entries.split(",") if ":" in entry)
        self.anonymous = anonymous

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None):
        if username is None:
            return User(role=UserRole.User) if self.anonymous else None
        expected = self.passwords.get(username)
        if expected is None or not hmac.compare_digest(expected.encode(), (password or "").encode()):
            return None
        return User(role=UserRole.User, name=username)


class OpcUaServerSink:
    name = "opcua"

    def __init__(self, settings: OpcUaServerSettings, *, write_timeout_s: float = 10.0) -> None:
        settings.check()
        self.settings = settings
        self.write_timeout_s = write_timeout_s
        self.runner = AsyncRunner("opcua-server")
        # camera ids are the producer's to choose: past `max_cameras` the least recently seen camera's folder goes
        self._cameras: BoundedMap[str, tuple[Any, dict[str, Any]]] = BoundedMap(settings.max_cameras, "OPC UA cameras")
        self.result_count: dict[str, int] = {}
        try:
            self.runner.run(self._start(), timeout=60)
        except BaseException:
            self.runner.close()
            raise

    async def _start(self) -> None:
        s = self.settings
        users = PasswordUsers(s.users.get_secret_value() if s.users else "", s.anonymous)
        server = Server(user_manager=users)
        await server.init()
        await server.set_application_uri(APPLICATION_URI)
        server.set_endpoint(s.endpoint)
        server.set_server_name("linewatch")
        server.set_security_policy([_POLICIES[s.security_mode]])
        tokens = [ua.UserNameIdentityToken] + ([ua.AnonymousIdentityToken] if s.anonymous else [])
        server.set_identity_tokens(tokens)
        if s.security_mode != "None":
            await server.load_certificate(str(s.certificate))
            await server.load_private_key(str(s.private_key))
        self.ns = await server.register_namespace(s.namespace)
        ns = self.ns
        self.root = await server.nodes.objects.add_object(ua.NodeId("linewatch", ns), ua.QualifiedName("Linewatch", ns))
        self.state = await self.root.add_variable(ua.NodeId("linewatch/SystemState", ns), "SystemState", "healthy")
        self.state_reason = await self.root.add_variable(
            ua.NodeId("linewatch/SystemStateReason", ns), "SystemStateReason", "starting"
        )
        self.cameras = await self.root.add_folder(ua.NodeId("linewatch/Cameras", ns), "Cameras")
        event_type = await server.create_custom_event_type(
            ns, "ResultReadyEventType", ua.ObjectIds.BaseEventType, EVENT_FIELDS
        )
        self.events = await server.get_event_generator(event_type, self.root)
        await server.start()
        self.server = server
        log.info("OPC UA server at %s (security %s)", s.endpoint, s.security_mode)

    async def _camera(self, camera_id: str, first: LineVerdict) -> dict[str, Any]:
        """The camera's variables, added (holding `first`) when the camera is new."""
        known = self._cameras.get(camera_id)
        if known is not None:
            return known[1]
        ns = self.ns
        folder = await self.cameras.add_object(ua.NodeId(f"linewatch/{camera_id}", ns), camera_id)
        nodes = {}
        for name, (variant, value_of) in RESULT_VARIABLES.items():
            initial = ua.Variant(value_of(first), variant)
            nodes[name] = await folder.add_variable(ua.NodeId(f"linewatch/{camera_id}/{name}", ns), name, initial)
        nodes["ResultCount"] = await folder.add_variable(
            ua.NodeId(f"linewatch/{camera_id}/ResultCount", ns), "ResultCount", ua.Variant(0, _VT.UInt32)
        )
        for gone, (gone_folder, _) in self._cameras.put(camera_id, (folder, nodes)):
            self.result_count.pop(gone, None)
            await self.server.delete_nodes([gone_folder], recursive=True)
        return nodes

    async def _publish(self, verdict: LineVerdict) -> None:
        nodes = await self._camera(verdict.camera_id, verdict)
        for name, (variant, value_of) in RESULT_VARIABLES.items():
            await nodes[name].write_value(ua.DataValue(ua.Variant(value_of(verdict), variant)))
        count = self.result_count.get(verdict.camera_id, 0) + 1
        self.result_count[verdict.camera_id] = count
        await nodes["ResultCount"].write_value(ua.DataValue(ua.Variant(count, _VT.UInt32)))
        event = self.events.event
        event.ResultId = verdict.result_id
        event.PartId = verdict.part_id or ""
        event.CameraId = verdict.camera_id
        event.ResultState = verdict.result_state
        event.Verdict = verdict.state
        event.Score = verdict.score
        event.Late = verdict.late
        event.CaptureTime = verdict.captured_at
        event.ProcessingTimeMs = verdict.processing_ms
        event.DeliveryTimeMs = verdict.delivery_ms
        await self.events.trigger(message=f"result {verdict.result_id} of {verdict.camera_id}: {verdict.state}")

    def deliver_result(self, verdict: LineVerdict, result: InspectionResult) -> None:
        try:
            self.runner.run(self._publish(verdict), timeout=self.write_timeout_s)
        except TimeoutError as exc:
            raise SinkUnavailable(f"OPC UA server did not take result {verdict.result_id}") from exc

    def deliver_alarm(self, event: AlarmEvent) -> None:  # results only: alarms reach the MES another way
        return None

    def set_state(self, state: str, reason: str) -> None:
        async def write() -> None:
            await self.state.write_value(state)
            await self.state_reason.write_value(reason)

        self.runner.run(write(), timeout=self.write_timeout_s)

    def close(self) -> None:
        try:
            self.runner.run(self.server.stop(), timeout=30)
        finally:
            self.runner.close()
