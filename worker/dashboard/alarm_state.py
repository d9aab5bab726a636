"""Acknowledgements and silences: records of the dashboard's own compacted topic.

The alarm service has no API for either, so the dashboard keeps them on a topic of its own
(`dashboard.state_topic`, compacted): every replica reads it whole at start and follows it
live, so an acknowledgement survives a restart and shows on every replica at once.

Keys: `ack:<alarm_id>` (one acknowledgement per alarm) and `silence:<camera_id>` (the camera's
current silence; a tombstone, i.e. a null value, lifts it early). A silence only mutes the
dashboard (its alarms are listed as silenced, not highlighted); the alarm service and the MES
still get every alarm.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from common.schemas import utc_now

ACK_PREFIX = "ack:"
SILENCE_PREFIX = "silence:"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlarmAck(_Record):
    schema_version: Literal[1] = 1
    kind: Literal["ack"] = "ack"
    alarm_id: str = Field(min_length=1, max_length=128)
    by: str = Field(min_length=1, max_length=128)
    at: datetime = Field(default_factory=utc_now)
    note: str | None = Field(None, max_length=2000)

    @property
    def key(self) -> str:
        return ACK_PREFIX + self.alarm_id


class Silence(_Record):
    schema_version: Literal[1] = 1
    kind: Literal["silence"] = "silence"
    camera_id: str = Field(min_length=1, max_length=128)
    until: datetime
    by: str = Field(min_length=1, max_length=128)
    at: datetime = Field(default_factory=utc_now)
    note: str | None = Field(None, max_length=2000)

    @property
    def key(self) -> str:
        return SILENCE_PREFIX + self.camera_id

    def active(self, now: datetime) -> bool:
        return self.at <= now < self.until


StateRecord = Annotated[AlarmAck | Silence, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[AlarmAck | Silence] = TypeAdapter(StateRecord)


def parse_state_record(value: bytes) -> AlarmAck | Silence:
    """ValueError (pydantic's) when the bytes are not a state record."""
    return _ADAPTER.validate_json(value)


def silence_key(camera_id: str) -> str:
    return SILENCE_PREFIX + camera_id
