"""The typed configuration: TOML + environment, unknown keys rejected, secrets masked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sensord.config import load_settings, mask_dsn, redacted
from sensord.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_shipped_config_is_valid() -> None:
    settings = load_settings(REPO / "config.toml", required=True)
    assert settings.mqtt.port == 1883


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSORD_MQTT__PORT", "2883")
    monkeypatch.setenv("SENSORD_DATABASE__DSN", "postgresql://u:secret@db/x")
    settings = load_settings(write(tmp_path, "[mqtt]\nport = 1999\n"))
    assert settings.mqtt.port == 2883
    assert settings.database.dsn.endswith("/x")


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("[mqtt]\nprot = 1\n", {}, "mqtt.prot: unknown key"),
        ("[mqtt]\nport = 1\n[nonsense]\nx = 1\n", {}, "nonsense: unknown key"),
        ("", {"SENSORD_MQTT__PROT": "1"}, "mqtt.prot: unknown key"),
        ("", {"SENSORD_MQTT_PORT": "1"}, "SENSORD_MQTT_PORT"),
        ("[ingest]\ncapacity = 10\n", {}, "ingest.capacity must be >= mqtt.receive_maximum"),
        ("[mqtt]\nport = 'x'\n", {}, "mqtt.port"),
        ("[mqtt\n", {}, "config.toml"),
    ],
)
def test_bad_configuration_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert named in str(caught.value)


def test_secrets_are_masked() -> None:
    assert (
        mask_dsn("postgresql://sensord:hunter2@h:5433/db") == "postgresql://sensord:***@h:5433/db"
    )
    assert "hunter2" not in mask_dsn("host=h password=hunter2 dbname=x")


def test_check_config_prints_masked_and_rejects_unknown_keys(tmp_path: Path) -> None:
    good = write(
        tmp_path, '[database]\ndsn = "postgresql://u:hunter2@h/db"\npassword = "pw-secret"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "sensord", "--config", str(good), "check-config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "hunter2" not in out and "pw-secret" not in out
    assert "[mqtt]" in out
    bad = write(tmp_path, "[mqtt]\nbogus = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "sensord", "--config", str(bad), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 78  # EX_CONFIG
    assert "mqtt.bogus: unknown key" in result.stderr


def test_redacted_is_plain_data() -> None:
    data = redacted(load_settings(None))
    assert set(data) >= {"mqtt", "database", "ingest", "retention", "metrics", "log", "shutdown"}


def test_systemd_credentials_fill_secrets_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "database-password").write_text("from-credential\n")
    (credentials / "mqtt-password").write_text("broker-secret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load_settings(write(tmp_path, '[database]\npassword = "from-toml"\n'))
    assert settings.database.password.get_secret_value() == "from-credential"
    assert settings.mqtt.password.get_secret_value() == "broker-secret"
    monkeypatch.setenv("SENSORD_DATABASE__PASSWORD", "from-env")
    assert load_settings(None).database.password.get_secret_value() == "from-env"


def test_an_unknown_credential_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "api-token").write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown credential 'api-token'"):
        load_settings(None)


def test_a_webhook_credential_fills_that_organisations_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "webhook-ORG-PM1").write_text("s3cret-of-at-least-32-characters\n")
    config = tmp_path / "config.toml"
    config.write_text('[dispatch.webhooks.ORG-PM1]\nurl = "https://example.org/hook"\n')
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    hook = load_settings(config).dispatch.webhooks["ORG-PM1"]
    assert hook.secret.get_secret_value() == "s3cret-of-at-least-32-characters"
    assert str(hook.url) == "https://example.org/hook"
