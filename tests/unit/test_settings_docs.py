"""Settings: every one is on the generated reference page, and secrets never print.

(That the page is current is checked in test_docs.py.)
"""

from pathlib import Path

from common.settings import LinewatchSettings

SETTINGS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "settings.md"


def test_the_settings_page_lists_every_setting():
    page = SETTINGS_PAGE.read_text()
    for section_name, section_field in LinewatchSettings.model_fields.items():
        for name in section_field.annotation.model_fields:
            assert f"`LINEWATCH_{section_name.upper()}__{name.upper()}`" in page


def test_secrets_are_masked_in_the_startup_print(monkeypatch):
    monkeypatch.setenv("LINEWATCH_KAFKA__SASL_PASSWORD", "hunter2-kafka")
    monkeypatch.setenv("LINEWATCH_REDIS__URL", "redis://:hunter2-redis@cache:6379/0")
    settings = LinewatchSettings()
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2-kafka"
    assert "hunter2" not in str(settings.redacted()) and "hunter2" not in repr(settings)
