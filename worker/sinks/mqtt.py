"""The MQTT sink: each verdict (retained, QoS 1) and each alarm to an MQTT broker (paho-mqtt).

Topics: `<prefix>/<line>/<camera>/verdict` (the last verdict stays retained, so a subscriber that
connects later gets it at once) and `<prefix>/<line>/<camera or _line>/alarm`. A publication
counts as delivered when the broker acknowledged it (PUBACK for QoS 1).
"""

from __future__ import annotations

import logging
import re

import paho.mqtt.client as mqtt

from common.schemas import InspectionResult
from worker.alarms.events import AlarmEvent
from worker.sinks.loop import SinkUnavailable
from worker.sinks.settings import MqttSinkSettings
from worker.sinks.verdict import LineVerdict

log = logging.getLogger(__name__)


def topic_level(name: str) -> str:
    """An id as one MQTT topic level: no separators or wildcards."""
    return re.sub(r"[/+#\x00]", "_", name) or "_"


def verdict_topic(prefix: str, line_id: str, camera_id: str) -> str:
    return f"{prefix}/{topic_level(line_id)}/{topic_level(camera_id)}/verdict"


def alarm_topic(prefix: str, line_id: str, camera_id: str | None) -> str:
    return f"{prefix}/{topic_level(line_id)}/{topic_level(camera_id) if camera_id else '_line'}/alarm"


class MqttSink:
    name = "mqtt"

    def __init__(self, settings: MqttSinkSettings) -> None:
        self.settings = settings
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv311,
        )
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
            )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.connect_async(settings.host, settings.port, keepalive=30)
        client.loop_start()
        self.client = client

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error(
                "MQTT broker %s:%d refused the connection: %s", self.settings.host, self.settings.port, reason_code
            )
        else:
            log.info("connected to the MQTT broker %s:%d", self.settings.host, self.settings.port)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        log.warning("MQTT broker %s:%d disconnected: %s", self.settings.host, self.settings.port, reason_code)

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if not self.client.is_connected():
            raise SinkUnavailable(f"MQTT broker {self.settings.host}:{self.settings.port} not connected")
        info = self.client.publish(topic, payload, qos=self.settings.qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SinkUnavailable(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(timeout=self.settings.publish_timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise SinkUnavailable(f"MQTT publish to {topic}: {exc}") from exc
        if not info.is_published():
            raise SinkUnavailable(f"MQTT broker did not acknowledge {topic} in {self.settings.publish_timeout_s}s")

    def deliver_result(self, verdict: LineVerdict, result: InspectionResult) -> None:
        topic = verdict_topic(self.settings.topic_prefix, verdict.line_id, verdict.camera_id)
        self._publish(topic, verdict.model_dump_json().encode("utf-8"), retain=True)

    def deliver_alarm(self, event: AlarmEvent) -> None:
        topic = alarm_topic(self.settings.topic_prefix, event.line_id, event.camera_id)
        self._publish(topic, event.model_dump_json(exclude={"masks"}).encode("utf-8"), retain=False)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
