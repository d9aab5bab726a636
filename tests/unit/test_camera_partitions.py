"""The camera -> partition table (common/partitions.py): an even assignment, the murmur2 fallback
exactly as kafka-python's DefaultPartitioner, and the commands that print and read the table.
The producer's records landing on the table's partitions: tests/integration/test_producer.py."""

from __future__ import annotations

import json

import pytest
import yaml
from kafka.partitioner import DefaultPartitioner

from common.partitions import CameraPartitioner, assign, expand, partition_of, spread
from common.partitions import main as spread_main
from common.settings import LinewatchSettings
from producer.cli import main as producer_main

CAMERAS = [f"cam-{i}" for i in range(1, 41)]


class Cluster:
    """The part of kafka-python's ClusterMetadata a partitioner reads."""

    def __init__(self, partitions: int):
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"frames"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


def _send(partitioner, camera: str, partitions: int = 16) -> int:
    key = camera.encode()
    return partitioner.partition("frames", key, key, b"x", b"x", Cluster(partitions))


def test_an_even_table_loads_the_busiest_of_16_partitions_at_most_1_25x_its_share():
    table = assign(CAMERAS, 16)
    even = spread(CAMERAS, 16, table=table)
    assert even.busiest == 3.0 and even.busiest <= 1.25 * even.even and even.empty == 0
    assert sorted(table) == sorted(CAMERAS)  # each camera on exactly one partition
    by_hash = spread(CAMERAS, 16)
    assert (by_hash.busiest, by_hash.empty) == (7.0, 2)  # what the table cures


def test_the_partitioner_follows_the_table_and_hashes_other_cameras_as_kafka_python_does():
    table = assign(CAMERAS, 16)
    partitioner, default = CameraPartitioner(table), DefaultPartitioner()
    assert {c: _send(partitioner, c) for c in CAMERAS} == table
    unknown = [f"cam-{i}" for i in range(41, 300)] + ["line-2/cam-a", "ünïcode", ""]
    for camera in unknown:
        for partitions in (1, 7, 16):
            assert _send(partitioner, camera, partitions) == _send(default, camera, partitions)
            assert partition_of(camera, partitions, table) == _send(default, camera, partitions)


def test_a_table_partition_the_topic_lacks_is_refused():
    with pytest.raises(ValueError, match="camera 'cam-1' on partition 20.*has 16 partitions"):
        _send(CameraPartitioner({"cam-1": 20}), "cam-1")
    with pytest.raises(ValueError, match="camera 'cam-1' on partition 20 of 16"):
        partition_of("cam-1", 16, {"cam-1": 20})


def test_a_table_grows_without_moving_a_camera():
    table = assign(CAMERAS, 16)
    grown = assign(CAMERAS + ["cam-41", "cam-42"], 16, keep=table)
    assert {c: grown[c] for c in CAMERAS} == table
    assert spread(grown, 16, table=grown).busiest == 3.0
    assert assign(["cam-1"], 4, keep={"cam-1": 9}) == {"cam-1": 0}  # an entry beyond the partitions is placed anew


def test_rates_weigh_the_assignment():
    rates = {"cam-1": 25.0, "cam-2": 25.0}
    table = assign(CAMERAS[:10], 4, fps=rates)
    fast = {table["cam-1"], table["cam-2"]}
    assert len(fast) == 2  # the two fast cameras apart, the slow ones on the other partitions
    assert not fast & {p for c, p in table.items() if c not in rates}


def test_camera_ranges():
    assert expand(["cam-1..cam-3", "cam-7,x", "cam-9..10"]) == [
        "cam-1",
        "cam-2",
        "cam-3",
        "cam-7",
        "x",
        "cam-9",
        "cam-10",
    ]


def test_assign_partitions_prints_a_table_the_settings_read_back(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LINEWATCH_KAFKA__CAMERA_PARTITIONS", raising=False)
    monkeypatch.delenv("LINEWATCH_CONFIG", raising=False)
    assert producer_main(["assign-partitions", "--cameras", "cam-1..cam-40", "--partitions", "16"]) == 0
    out, err = capsys.readouterr()
    assert "busiest partition 3 vs 2.50 if even (1.20x)" in err
    config = tmp_path / "config.yaml"
    config.write_text(out)
    monkeypatch.setenv("LINEWATCH_CONFIG", str(config))
    table = LinewatchSettings().kafka.camera_partitions
    assert table == assign(CAMERAS, 16)

    assert producer_main(["assign-partitions", "--cameras", "cam-41", "--partitions", "16", "--format", "env"]) == 0
    name, _, value = capsys.readouterr().out.strip().partition("=")
    grown = json.loads(value.strip("'"))
    assert name == "LINEWATCH_KAFKA__CAMERA_PARTITIONS" and grown == table | {"cam-41": grown["cam-41"]}
    monkeypatch.setenv(name, value.strip("'"))
    assert LinewatchSettings().kafka.camera_partitions == grown  # the environment form reads back too

    assert spread_main(["--partitions", "16", "cam-1..cam-40"]) == 0
    assert "(1.20x)" in capsys.readouterr().out  # the spread command follows the same table
    assert spread_main(["--partitions", "16", "--murmur2", "cam-1..cam-40"]) == 0
    assert "(2.80x); 2 partition(s) without a camera" in capsys.readouterr().out


def test_yaml_output_is_the_settings_shape(capsys, monkeypatch):
    monkeypatch.delenv("LINEWATCH_CONFIG", raising=False)
    producer_main(["assign-partitions", "--cameras", "a", "b", "--partitions", "2", "--fresh"])
    assert yaml.safe_load(capsys.readouterr().out) == {"kafka": {"camera_partitions": {"a": 0, "b": 1}}}


def test_an_entry_beyond_the_partitions_is_reported(monkeypatch, capsys):
    monkeypatch.delenv("LINEWATCH_CONFIG", raising=False)
    monkeypatch.setenv("LINEWATCH_KAFKA__CAMERA_PARTITIONS", '{"cam-1": 9, "cam-2": 1}')
    assert producer_main(["assign-partitions", "--cameras", "cam-1", "cam-3", "--partitions", "4"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["kafka"]["camera_partitions"] == {"cam-2": 1, "cam-1": 0, "cam-3": 2}
    assert "moved (or left out if not listed): cam-1" in err
