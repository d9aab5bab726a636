"""Settings of the line sinks: `LINEWATCH_SINK__*`, `LINEWATCH_MQTT__*`, `LINEWATCH_OPCUA__*`, `LINEWATCH_PLC__*`.

Read from the environment, or from the YAML file named by `LINEWATCH_SINKS_CONFIG` (sections
`sink`, `mqtt`, `opcua`, `plc`). Kafka itself is configured as for every linewatch process
(`LINEWATCH_KAFKA__*`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.settings_base import Section as _Section
from common.settings_base import env_then_yaml

SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]


class SinkCommonSettings(_Section):
    late_after_ms: float | None = Field(
        None, gt=0, description="a verdict more than this long after capture is flagged late; None: never late"
    )
    late_is_ng: bool = Field(False, description="a late verdict is sent as NG whatever the score said")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "latest", description="where a brand-new sink group starts on the results topic (no replay of history)"
    )
    retry_interval_s: float = Field(1.0, gt=0, description="wait between attempts while the far end is down")
    commit_interval_ms: int = Field(0, ge=0, description="how often delivered offsets are committed (0: each one)")


class MqttSinkSettings(_Section):
    host: str = Field("127.0.0.1", description="MQTT broker host")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port (8883 with TLS)")
    client_id: str = Field("linewatch-sink", description="MQTT client id (one per sink replica)")
    topic_prefix: str = Field("linewatch", description="topics: <prefix>/<line>/<camera>/verdict and .../alarm")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of every publication")
    username: str | None = Field(None, description="MQTT user")
    password: SecretStr | None = Field(None, description="MQTT password (secret)")
    tls: bool = Field(False, description="connect over TLS")
    ca_file: Path | None = Field(None, description="CA bundle of the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client key (mutual TLS)")
    publish_timeout_s: float = Field(10.0, gt=0, description="wait this long for the broker's PUBACK")
    group_id: str = Field("linewatch-sink-mqtt", description="consumer group on the results and alarms topics")


class OpcUaServerSettings(_Section):
    endpoint: str = Field("opc.tcp://0.0.0.0:4840/linewatch/", description="where the OPC UA server listens")
    namespace: str = Field("urn:linewatch:line", description="namespace URI of the linewatch nodes")
    security_mode: SecurityMode = Field(
        "SignAndEncrypt", description="None, Sign or SignAndEncrypt (Basic256Sha256); None only when asked for"
    )
    certificate: Path | None = Field(
        None, description="server certificate (DER or PEM); needed unless security is None"
    )
    private_key: Path | None = Field(None, description="server private key (PEM)")
    anonymous: bool = Field(False, description="let clients in without a user name")
    users: SecretStr | None = Field(None, description="`name:password` entries, comma-separated (secret)")
    group_id: str = Field("linewatch-sink-opcua", description="consumer group on the results topic")
    degraded_lag: int = Field(100, ge=1, description="results waiting for this sink above which the state is degraded")
    faulted_after_s: float = Field(
        30.0, gt=0, description="frames arriving but no result for this long: state faulted (no worker answers)"
    )
    state_interval_s: float = Field(2.0, gt=0, description="how often the system state is evaluated")
    max_cameras: int = Field(1000, ge=1, description="camera folders kept; past it the least recently seen is deleted")

    def check(self) -> None:
        """Refuse an insecure or unusable server before it starts (ValueError says what to set)."""
        if self.security_mode != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(
                f"opcua.security_mode={self.security_mode} needs opcua.certificate and opcua.private_key "
                "(or opcua.security_mode=None to run without security)"
            )
        if not self.anonymous and self.users is None:
            raise ValueError("set opcua.users, or opcua.anonymous=true to let clients in without a user name")


class PlcClientSettings(_Section):
    """Writing each verdict into an existing PLC / MES node set, with a result-ready / acknowledge handshake."""

    endpoint: str | None = Field(None, description="opc.tcp:// URL of the PLC's OPC UA server")
    security_mode: SecurityMode = Field("SignAndEncrypt", description="None, Sign or SignAndEncrypt (Basic256Sha256)")
    certificate: Path | None = Field(None, description="client certificate")
    private_key: Path | None = Field(None, description="client private key")
    server_certificate: Path | None = Field(None, description="the PLC's certificate (trusted)")
    username: str | None = Field(None, description="user name (None: anonymous)")
    password: SecretStr | None = Field(None, description="password (secret)")
    result_id_node: str | None = Field(None, description="NodeId receiving the result id (String)")
    part_id_node: str | None = Field(None, description="NodeId receiving the part id (String)")
    verdict_node: str = Field("ns=2;s=Inspection.Verdict", description="NodeId receiving the verdict")
    verdict_type: Literal["Boolean", "Int16", "Int32", "String"] = Field(
        "Int16", description="Boolean (true = OK), Int16/Int32 (1 = OK, 2 = NG) or String (OK/NG)"
    )
    score_node: str | None = Field(None, description="NodeId receiving the score (Float)")
    result_ready_node: str = Field(
        "ns=2;s=Inspection.ResultReady", description="Boolean set once the fields are written"
    )
    ack_node: str = Field("ns=2;s=Inspection.Ack", description="Boolean the PLC sets when it took the result")
    ack_timeout_s: float = Field(5.0, gt=0, description="an unacknowledged result counts as not delivered")
    failures_to_open: int = Field(3, ge=1, description="circuit breaker: consecutive failures that open it")
    open_for_s: float = Field(10.0, gt=0, description="circuit breaker: how long it stays open before a retry")
    group_id: str = Field("linewatch-sink-plc", description="consumer group on the results topic")

    def check(self) -> None:
        if self.endpoint is None:
            raise ValueError("plc.endpoint is not set (the PLC's opc.tcp:// URL)")
        if self.security_mode != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(
                f"plc.security_mode={self.security_mode} needs plc.certificate and plc.private_key "
                "(or plc.security_mode=None to connect without security)"
            )


class SinkSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LINEWATCH_", env_nested_delimiter="__", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    sink: SinkCommonSettings = SinkCommonSettings()
    mqtt: MqttSinkSettings = MqttSinkSettings()
    opcua: OpcUaServerSettings = OpcUaServerSettings()
    plc: PlcClientSettings = PlcClientSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_then_yaml(settings_cls, init_settings, env_settings, "LINEWATCH_SINKS_CONFIG")
