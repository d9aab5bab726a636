"""The README's configuration table is the one the code generates."""

from pathlib import Path

from common.settings import LinewatchSettings, settings_table


def test_readme_lists_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert settings_table() in readme, "regenerate the table with `python -m common.settings`"


def test_secrets_are_masked_in_the_startup_print(monkeypatch):
    monkeypatch.setenv("LINEWATCH_KAFKA__SASL_PASSWORD", "hunter2-kafka")
    monkeypatch.setenv("LINEWATCH_REDIS__URL", "redis://:hunter2-redis@cache:6379/0")
    settings = LinewatchSettings()
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2-kafka"
    assert "hunter2" not in str(settings.redacted()) and "hunter2" not in repr(settings)
