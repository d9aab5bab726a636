"""Calibration from normal frames and operator feedback (`linewatch-worker calibrate`, `feedback`).

- `record.py`: pure: normal scores -> ControlRecord; the record file (`--out`, `inspect --calibration`).
- `scoring.py`: normal frames through the Inspector -> raw and pixel scores.
- `topics.py`: the Kafka edges: frames by camera or by offset, the control topic's version, feedback.
- `cli.py` / `feedback_cli.py`: the two subcommands.
"""
