"""The base of every settings section (common/settings.py assembles them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Errors name the field but never echo its value: a misspelt secret variable would print the secret.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
