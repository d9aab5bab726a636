"""Alarm rules file (YAML), validated by pydantic.

    version: 1                      # optional
    defaults:                       # optional: fills fields a rule leaves out
      cooldown_s: 300
    rules:
      - name: line1-bottle-defects  # unique
        kind: anomaly
        match: {line: "line-1", camera: "cam-*", object: bottle}   # globs; a list means "any of"
        threshold: 0.7              # optional: anomalous = score >= 0.7 (default: the result's verdict)
        debounce: {anomalous: 3, of_last: 5}
        cooldown_s: 60
      - name: bottle-drift          # calibrated at 1%: alarm when over 3% of the last 500 frames are anomalous
        kind: drift
        match: {object: bottle}
        window: 500                 # frames
        target_rate: 0.01
        multiple: 3
        min_frames: 200             # optional (default: window)
      - name: cameras-silent
        kind: silence
        match: {line: "line-*"}
        silent_for_s: 30
        per: camera                 # or: line (no result from any camera of the line)
        expected:                   # alarm even when these never sent anything
          - {line: line-1, camera: cam-1}
      - name: stale-frames          # over 20% of a camera's last 200 results skipped as stale
        kind: skipped
        window: 200
        max_share: 0.2

`load_rules(path)` raises `RulesFileError` whose message names the file, the rule (index and
name) and the field of every problem, e.g.
`rules.yaml: rules[1] (name 'cameras-silent'): silent_for_s: Input should be greater than 0`.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Patterns = tuple[str, ...]


class RulesFileError(ValueError):
    """The rules file is missing, is not YAML, or does not validate. `problems` lists each one."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"invalid alarm rules file {path}:\n" + "\n".join(f"  - {p}" for p in problems))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _patterns(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("needs at least one pattern")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise ValueError("patterns must be non-empty strings")
        return tuple(item.strip() for item in value)
    return value


class Match(_Model):
    """Which results a rule looks at: shell-style globs (`*`, `?`, `[ab]`), case-sensitive."""

    line: Patterns = ("*",)
    camera: Patterns = ("*",)
    object: Patterns = ("*",)

    @field_validator("line", "camera", "object", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        return _patterns(value)

    @staticmethod
    def _any(value: str | None, patterns: Patterns) -> bool:
        if value is None:
            return patterns == ("*",)
        return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)

    def matches(self, line: str, camera: str | None = None, object_name: str | None = None) -> bool:
        return self._any(line, self.line) and self._any(camera, self.camera) and self._any(object_name, self.object)


class Debounce(_Model):
    """Alarm when `anomalous` of the last `of_last` frames of one camera/object were anomalous."""

    anomalous: int = Field(1, ge=1)
    of_last: int = Field(1, ge=1, le=10_000)

    @model_validator(mode="after")
    def _fits(self) -> Debounce:
        if self.anomalous > self.of_last:
            raise ValueError(f"anomalous ({self.anomalous}) cannot exceed of_last ({self.of_last})")
        return self


class _Rule(_Model):
    name: str = Field(min_length=1, max_length=200)
    match: Match = Match()
    cooldown_s: float = Field(0.0, ge=0.0, description="no new alarm of this rule for the same stream before this")


class AnomalyRule(_Rule):
    kind: Literal["anomaly"]
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    debounce: Debounce = Debounce()


class ExpectedStream(_Model):
    line: str = Field(min_length=1)
    camera: str | None = None


class SilenceRule(_Rule):
    kind: Literal["silence"]
    silent_for_s: float = Field(gt=0.0)
    per: Literal["camera", "line"] = "camera"
    expected: list[ExpectedStream] = Field(default_factory=list)

    @model_validator(mode="after")
    def _expected_fit(self) -> SilenceRule:
        for i, stream in enumerate(self.expected):
            if self.per == "camera" and stream.camera is None:
                raise ValueError(f"expected[{i}]: a camera is required when per is 'camera'")
            if self.per == "line" and stream.camera is not None:
                raise ValueError(f"expected[{i}]: give only the line when per is 'line'")
            fits = Match._any(stream.line, self.match.line) and (
                stream.camera is None or Match._any(stream.camera, self.match.camera)
            )
            if not fits:
                raise ValueError(f"expected[{i}] ({stream.line}/{stream.camera or '*'}) does not fit this rule's match")
        return self


class DriftRule(_Rule):
    """Alarm when the share of anomalous verdicts over the last `window` frames of a stream
    exceeds `multiple` x `target_rate` (the false-alarm rate the stream was calibrated at)."""

    kind: Literal["drift"]
    window: int = Field(ge=1, le=100_000, description="the last N inspected frames of the stream")
    target_rate: float = Field(gt=0.0, lt=1.0, description="calibrated false-alarm rate, e.g. 0.01")
    multiple: float = Field(3.0, ge=1.0, description="alarm above multiple x target_rate")
    min_frames: int | None = Field(None, ge=1, description="no verdict before this many frames (default: window)")

    @property
    def limit(self) -> float:
        return self.multiple * self.target_rate

    @property
    def needed(self) -> int:
        return self.min_frames if self.min_frames is not None else self.window

    @model_validator(mode="after")
    def _reachable(self) -> DriftRule:
        if self.min_frames is not None and self.min_frames > self.window:
            raise ValueError(f"min_frames ({self.min_frames}) cannot exceed window ({self.window})")
        if self.limit >= 1.0:
            raise ValueError(f"multiple x target_rate = {self.limit:g}: a rate can never exceed it")
        return self


class SkippedRule(_Rule):
    """Alarm when more than `max_share` of a camera's last `window` results were `skipped`: its frames
    arrive stale (a backlog, or a camera clock out of step with the broker's)."""

    kind: Literal["skipped"]
    window: int = Field(100, ge=1, le=100_000, description="the last N results of the camera")
    max_share: float = Field(0.1, gt=0.0, lt=1.0, description="alarm above this share of skipped results")
    min_results: int | None = Field(None, ge=1, description="no verdict before this many results (default: window)")

    @property
    def needed(self) -> int:
        return min(self.min_results or self.window, self.window)


Rule = Annotated[AnomalyRule | SilenceRule | DriftRule | SkippedRule, Field(discriminator="kind")]


class Defaults(_Model):
    cooldown_s: float | None = Field(None, ge=0.0)
    silent_for_s: float | None = Field(None, gt=0.0)


class RulesFile(_Model):
    version: Literal[1] = 1
    defaults: Defaults = Defaults()
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("defaults"), dict):
            return data
        defaults = data["defaults"]
        rules = data.get("rules")
        if not isinstance(rules, list):
            return data
        filled = []
        for rule in rules:
            if isinstance(rule, dict):
                rule = dict(rule)
                if defaults.get("cooldown_s") is not None:
                    rule.setdefault("cooldown_s", defaults["cooldown_s"])
                if defaults.get("silent_for_s") is not None and rule.get("kind") == "silence":
                    rule.setdefault("silent_for_s", defaults["silent_for_s"])
            filled.append(rule)
        return {**data, "rules": filled}

    @model_validator(mode="after")
    def _unique_names(self) -> RulesFile:
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules[{index}]: name {rule.name!r} is already used by rules[{seen[rule.name]}]")
            seen[rule.name] = index
        return self


# --------------------------------------------------------------------------- loading


def _describe(raw: Any, error: dict[str, Any]) -> str:
    loc = list(error.get("loc", ()))
    where = ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        rule = raw["rules"][index] if isinstance(raw, dict) and isinstance(raw.get("rules"), list) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        where = f"rules[{index}]" + (f" (name {name!r})" if name else "")
        loc = loc[2:]
        if loc and isinstance(rule, dict) and loc[0] == rule.get("kind"):
            loc = loc[1:]  # the discriminator tag pydantic adds to the location
    field = ".".join(str(part) for part in loc)
    if not field and error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        field = "kind"
    message = str(error.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    parts = [p for p in (where, field) if p]
    return (": ".join(parts) + ": " if parts else "") + message


def parse_rules(raw: Any, source: str = "<rules>") -> RulesFile:
    """Validate already-parsed YAML data."""
    if not isinstance(raw, dict):
        raise RulesFileError(source, ["the top level must be a mapping with a `rules:` list"])
    try:
        return RulesFile.model_validate(raw)
    except ValidationError as exc:
        raise RulesFileError(source, [f"{source}: {_describe(raw, e)}" for e in exc.errors()]) from None


def parse_rules_text(text: str, source: str = "<rules>") -> RulesFile:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesFileError(source, [f"{where}: not valid YAML: {problem}"]) from None
    return parse_rules(raw, source)


def load_rules(path: str | Path) -> RulesFile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesFileError(str(path), [f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_rules_text(text, str(path))
