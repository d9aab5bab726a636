"""GigE Vision / USB3 Vision cameras (GenICam) through Aravis' GObject introspection bindings.

Needs Debian's `gir1.2-aravis-0.8` and PyGObject (the `camera` extra). Trigger modes:

- `free-run`: the camera streams at its own (or `frame_rate`) pace;
- `software`: the producer fires `TriggerSoftware` once per part id it is given (one line each,
  e.g. from the PLC through a pipe), or at `software_fps` without part ids;
- `hardware`: the camera waits for its trigger line (`trigger_source`, e.g. Line0); waiting with
  no part on the belt is not a failure.

Each frame carries the camera's frame id and timestamp. A frame the stream could not complete
(lost packets) is dropped and shows up as a gap in the frame counter. After the camera drops
off the network the source reconnects (`reconnect_attempts` x `reconnect_delay_s`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, Literal

from common.schemas import utc_now
from producer.sources.base import Frame, FrameSource, SourceError
from producer.sources.pixels import SUPPORTED_PIXEL_FORMATS, PixelFormatError, to_rgb

log = logging.getLogger("producer.sources.genicam")

TriggerMode = Literal["free-run", "software", "hardware"]
SOFTWARE_TRIGGER_TRIES = 3  # a trigger the camera missed (e.g. right after it started) is fired again
INSTALL_HINT = (
    "GenICam cameras need Aravis and PyGObject: apt-get install gir1.2-aravis-0.8 libgirepository1.0-dev "
    "libcairo2-dev pkg-config, then pip install 'linewatch[camera]'"
)


def load_aravis() -> Any:
    """The `Aravis` 0.8 module, or SourceError saying what to install."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{INSTALL_HINT} ({exc})") from exc
    return Aravis


class GenICamSource(FrameSource):
    """Frames of one GenICam camera, named by Aravis id, serial, or IP address (None: the first found)."""

    live = True

    def __init__(
        self,
        camera: str | None = None,
        *,
        trigger: TriggerMode = "free-run",
        trigger_source: str = "Line0",
        software_fps: float = 0.0,
        part_ids: Iterable[str] | None = None,
        pixel_format: str | None = None,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        frame_rate: float | None = None,
        region: tuple[int, int, int, int] | None = None,
        packet_resend: bool = True,
        buffers: int = 8,
        frame_timeout_s: float = 2.0,
        reconnect_attempts: int = 5,
        reconnect_delay_s: float = 1.0,
    ) -> None:
        if pixel_format is not None and pixel_format not in SUPPORTED_PIXEL_FORMATS:
            raise SourceError(f"pixel format {pixel_format!r}: use one of {', '.join(SUPPORTED_PIXEL_FORMATS)}")
        if part_ids is not None and trigger != "software":
            raise SourceError("part ids drive software triggers: use trigger 'software' with them")
        self.Aravis = load_aravis()
        self.camera_name = camera
        self.trigger = trigger
        self.trigger_source = trigger_source
        self.software_fps = software_fps
        self.part_ids = iter(part_ids) if part_ids is not None else None
        self.pixel_format = pixel_format
        self.exposure_us = exposure_us
        self.gain_db = gain_db
        self.frame_rate = frame_rate
        self.region = region
        self.packet_resend = packet_resend
        self.buffers = buffers
        self.frame_timeout_s = frame_timeout_s
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.name = f"genicam:{camera or 'first'}"
        self.incomplete = 0  # buffers dropped for lost packets
        self.reconnects = 0
        self._camera: Any = None
        self._stream: Any = None
        self._closed = False
        self._open()

    # ------------------------------------------------------------------ device

    def _open(self) -> None:
        Aravis = self.Aravis
        try:
            camera = Aravis.Camera.new(self.camera_name)
        except Exception as exc:  # GLib.Error: not found, no control access
            raise SourceError(f"cannot open GenICam camera {self.camera_name or '(first found)'}: {exc}") from exc
        try:
            self._configure(camera)
            stream = camera.create_stream(None, None)
            if isinstance(stream, Aravis.GvStream):
                resend = Aravis.GvStreamPacketResend
                stream.set_property("packet-resend", resend.ALWAYS if self.packet_resend else resend.NEVER)
            payload = camera.get_payload()
            for _ in range(self.buffers):
                stream.push_buffer(Aravis.Buffer.new_allocate(payload))
            camera.start_acquisition()
        except Exception as exc:
            raise SourceError(f"cannot start GenICam camera {self.camera_name or '(first found)'}: {exc}") from exc
        self._camera, self._stream = camera, stream
        log.info(
            "%s: %s %s (serial %s), %s, %s trigger",
            self.name,
            camera.get_vendor_name(),
            camera.get_model_name(),
            camera.get_device_serial_number(),
            camera.get_pixel_format_as_string(),
            self.trigger,
        )

    def _configure(self, camera: Any) -> None:
        if self.pixel_format is not None:
            camera.set_pixel_format_from_string(self.pixel_format)
        if self.region is not None:
            camera.set_region(*self.region)
        if self.exposure_us is not None:
            if camera.is_exposure_auto_available():
                camera.set_exposure_time_auto(self.Aravis.Auto.OFF)
            camera.set_exposure_time(self.exposure_us)
        if self.gain_db is not None:
            if camera.is_gain_auto_available():
                camera.set_gain_auto(self.Aravis.Auto.OFF)
            camera.set_gain(self.gain_db)
        if self.trigger == "free-run":
            camera.clear_triggers()
            if self.frame_rate is not None:
                camera.set_frame_rate(self.frame_rate)
        else:
            camera.set_trigger("Software" if self.trigger == "software" else self.trigger_source)
        camera.set_acquisition_mode(self.Aravis.AcquisitionMode.CONTINUOUS)

    def _release(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop_acquisition()
            except Exception as exc:  # the camera is gone already
                log.debug("%s: stop_acquisition: %s", self.name, exc)
        self._camera = self._stream = None

    def _reachable(self) -> bool:
        try:
            self._camera.get_device().get_string_feature_value("DeviceVendorName")
            return True
        except Exception:
            return False

    def _reconnect(self) -> bool:
        self._release()
        for attempt in range(1, self.reconnect_attempts + 1):
            if self._closed:
                return False
            log.warning("%s: camera lost, reconnecting (attempt %d/%d)", self.name, attempt, self.reconnect_attempts)
            time.sleep(self.reconnect_delay_s)
            try:
                self._open()
            except SourceError as exc:
                log.warning("%s", exc)
                continue
            self.reconnects += 1
            return True
        return False

    # ------------------------------------------------------------------ frames

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        next_trigger = time.monotonic()
        pending = False  # a software trigger is owed for `part_id` (first try, or a retry)
        part_id: str | None = None
        tries = 0
        while not self._closed and (self._camera is not None or self._reconnect()):
            if self.trigger == "software":
                if not pending:
                    part_id, tries = None, 0
                    if self.part_ids is not None:
                        line = next(self.part_ids, None)
                        if line is None:
                            return  # the part list ended
                        part_id = line.strip() or None
                    elif self.software_fps > 0:
                        time.sleep(max(0.0, next_trigger - time.monotonic()))
                        next_trigger = max(next_trigger + 1.0 / self.software_fps, time.monotonic())
                    pending = True
                tries += 1
                try:
                    self._camera.software_trigger()
                except Exception as exc:
                    log.warning("%s: software trigger failed: %s", self.name, exc)
                    if not self._reconnect():
                        return
                    continue
            frame = self._next_frame(index, part_id)
            if frame is None:
                reachable = self._reachable()
                if self.trigger == "hardware" and reachable:
                    continue  # no part came by
                if self.trigger == "software" and reachable and tries < SOFTWARE_TRIGGER_TRIES:
                    log.warning(
                        "%s: no frame for software trigger %d of part %s, firing again", self.name, tries, part_id
                    )
                    continue
                if not self._reconnect():
                    return
                continue
            pending = False
            if frame is _INCOMPLETE:
                if part_id is not None:
                    log.warning(
                        "%s: the frame of part %s was incomplete (lost packets): no image of it", self.name, part_id
                    )
                continue
            yield frame
            index += 1

    def _next_frame(self, index: int, part_id: str | None) -> Frame | object | None:
        """The next complete frame, `_INCOMPLETE` for a buffer that lost packets, None on a timeout."""
        stream = self._stream
        buffer = stream.timeout_pop_buffer(int(self.frame_timeout_s * 1_000_000)) if stream is not None else None
        if buffer is None:
            return None
        try:
            if buffer.get_status() != self.Aravis.BufferStatus.SUCCESS:
                self.incomplete += 1
                log.debug("%s: frame %d incomplete: %s", self.name, buffer.get_frame_id(), buffer.get_status())
                return _INCOMPLETE
            pixel_format = self._pixel_format_name(buffer.get_image_pixel_format())
            try:
                rgb = to_rgb(buffer.get_image_data(), buffer.get_image_width(), buffer.get_image_height(), pixel_format)
            except PixelFormatError as exc:
                raise SourceError(f"{self.name}: {exc}") from exc
            return Frame(
                rgb=rgb,
                index=index,
                captured_at=_received_at(buffer.get_system_timestamp()),
                name=self.name,
                part_id=part_id,
                frame_counter=int(buffer.get_frame_id()),
                hardware_timestamp_ns=int(buffer.get_timestamp()) or None,
            )
        finally:
            stream.push_buffer(buffer)

    def _pixel_format_name(self, value: int) -> str:
        Aravis = self.Aravis
        names = {
            Aravis.PIXEL_FORMAT_MONO_8: "Mono8",
            Aravis.PIXEL_FORMAT_RGB_8_PACKED: "RGB8",
            Aravis.PIXEL_FORMAT_BGR_8_PACKED: "BGR8",
            Aravis.PIXEL_FORMAT_BAYER_RG_8: "BayerRG8",
            Aravis.PIXEL_FORMAT_BAYER_BG_8: "BayerBG8",
            Aravis.PIXEL_FORMAT_BAYER_GR_8: "BayerGR8",
            Aravis.PIXEL_FORMAT_BAYER_GB_8: "BayerGB8",
        }
        return names.get(value, f"0x{value:08x}")

    def close(self) -> None:
        """Stop the camera; an iteration in another thread ends after its current wait."""
        self._closed = True
        self._release()


_INCOMPLETE = object()


def _received_at(system_timestamp_ns: int) -> datetime:
    """When the host began receiving the frame (Aravis' system timestamp), or now when unset."""
    if system_timestamp_ns <= 0:
        return utc_now()
    return datetime.fromtimestamp(system_timestamp_ns / 1e9, tz=timezone.utc)
