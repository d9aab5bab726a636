"""Where calibration's normal frames come from: image files, the newest frames of a camera on
the frames topic, and the frames operators marked `false_alarm` (fetched by their offsets).

Each returns the decoded frames and a list of problems (one line per frame it had to skip):
a bad input is reported and skipped, never fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kafka.consumer.fetcher import ConsumerRecord

from common.codecs import ImageDecodeError, decode_image
from common.messages import FrameHeaderError, parse_frame_meta
from common.settings import LinewatchSettings
from worker.calibration.scoring import NormalFrame, decode_file
from worker.calibration.topics import fetch_frames_at, last_frames_of_camera, read_feedback


@dataclass
class Gathered:
    frames: list[NormalFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    frame_ids: set[str] = field(default_factory=set)  # of frames from the topic, against double counting

    def extend(self, other: Gathered) -> None:
        for frame in other.frames:
            if frame.label not in self.frame_ids:
                self.frames.append(frame)
        self.frame_ids |= other.frame_ids
        self.problems += other.problems


def from_files(paths: Sequence[Path], object_name: str, settings: LinewatchSettings) -> Gathered:
    out = Gathered()
    for path in paths:
        try:
            image, _ = decode_file(path, settings.worker)
        except (OSError, ImageDecodeError) as exc:
            out.problems.append(f"{path}: {exc}")
            continue
        out.frames.append(NormalFrame(str(path), image, object_name))
    return out


def _decode_record(record: ConsumerRecord, object_name: str, settings: LinewatchSettings) -> NormalFrame:
    """The frame of a frames-topic record; ValueError (with the reason) when it cannot be used."""
    where = f"{record.topic}/{record.partition}@{record.offset}"
    try:
        meta = parse_frame_meta(record.headers)
    except FrameHeaderError as exc:
        raise ValueError(f"{where}: {exc.message}") from None
    if meta.object_name != object_name:
        raise ValueError(f"{where}: frame {meta.frame_id} shows {meta.object_name!r}, not {object_name!r}")
    limits = settings.worker
    try:
        image = decode_image(
            record.value or b"", meta.content_type, max_bytes=limits.max_frame_bytes, max_pixels=limits.max_frame_pixels
        )
    except ImageDecodeError as exc:
        raise ValueError(f"{where}: frame {meta.frame_id}: {exc}") from None
    return NormalFrame(meta.frame_id, image, object_name)


def from_topic(camera_id: str, count: int, object_name: str, settings: LinewatchSettings) -> Gathered:
    """The newest `count` frames of `camera_id` on the frames topic."""
    out = Gathered()
    records = last_frames_of_camera(settings.kafka, camera_id, count)
    if len(records) < count:
        out.problems.append(f"{settings.kafka.frames_topic} holds only {len(records)} frames of camera {camera_id}")
    for record in records:
        try:
            frame = _decode_record(record, object_name, settings)
        except ValueError as exc:
            out.problems.append(str(exc))
            continue
        out.frames.append(frame)
        out.frame_ids.add(frame.label)
    return out


def from_feedback(
    camera_id: str | None, object_name: str, settings: LinewatchSettings, label: str = "false_alarm"
) -> Gathered:
    """The frames of the scope that operators labelled `label` (`false_alarm`: good frames the threshold
    flagged; `good_reference`: frames confirmed good, for reference banks)."""
    out, named = Gathered(), label.replace("_", " ")
    log = read_feedback(settings.kafka)
    out.problems += [f"invalid feedback record {line}" for line in log.invalid]
    chosen = {}
    for _, feedback in log.records:
        if feedback.label != label or feedback.object_name != object_name:
            continue
        if camera_id is not None and feedback.camera_id != camera_id:
            continue
        chosen.setdefault((feedback.camera_id, feedback.frame_id), feedback)  # one frame counts once
    located = {}
    for (camera, frame_id), feedback in chosen.items():
        if feedback.source is None:
            out.problems.append(f"{named} {camera}/{frame_id}: no frames-topic position in the feedback, skipped")
        else:
            located[(feedback.source.topic, feedback.source.partition, feedback.source.offset)] = feedback
    fetched = fetch_frames_at(settings.kafka, [f.source for f in located.values() if f.source is not None])
    for position, feedback in located.items():
        topic, partition, offset = position
        where = f"{named} {feedback.camera_id}/{feedback.frame_id} at {topic}/{partition}@{offset}"
        if position in fetched.missing:
            out.problems.append(f"{where}: {fetched.missing[position]}, skipped")
            continue
        try:
            frame = _decode_record(fetched.found[position], object_name, settings)
        except ValueError as exc:
            out.problems.append(f"{where}: {exc}, skipped")
            continue
        if frame.label != feedback.frame_id:
            out.problems.append(f"{where}: the record there is frame {frame.label}, skipped")
            continue
        out.frames.append(frame)
        out.frame_ids.add(frame.label)
    return out
