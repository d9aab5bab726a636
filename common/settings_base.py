"""The base of every settings section (common/settings.py assembles them) and where settings are read from."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, YamlConfigSettingsSource


class Section(BaseModel):
    # Errors name the field but never echo its value: a misspelt secret variable would print the secret.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def env_then_yaml(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    config_variable: str,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Where settings come from, first match wins: arguments, `LINEWATCH_*` variables, then the YAML
    file that the environment variable `config_variable` names (an error when it names no file)."""
    sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
    config_file = os.environ.get(config_variable)
    if config_file:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"{config_variable} points to {config_file}, which does not exist")
        sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
    return tuple(sources)
