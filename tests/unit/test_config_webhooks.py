"""Webhook settings: a real HMAC key, and https unless explicitly to this host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.config import WEBHOOK_SECRET_MIN, is_loopback, load_settings
from sensord.errors import ConfigError

KEY = "k" * WEBHOOK_SECRET_MIN


def hook(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"[dispatch.webhooks.ORG-PM1]\n{body}\n")
    return path


def refusal(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(hook(tmp_path, body))
    return str(refused.value)


def test_https_with_a_long_secret_is_accepted(tmp_path: Path) -> None:
    config = load_settings(hook(tmp_path, f'url = "https://pm1.example.org/x"\nsecret = "{KEY}"'))
    assert config.dispatch.webhooks["ORG-PM1"].allow_http_loopback is False


def test_a_missing_secret_is_refused_naming_the_key(tmp_path: Path) -> None:
    text = refusal(tmp_path, 'url = "https://pm1.example.org/x"')
    assert "dispatch.webhooks.ORG-PM1.secret: Field required" in text


@pytest.mark.parametrize("secret", ["", "s3cret", "k" * (WEBHOOK_SECRET_MIN - 1)])
def test_a_short_secret_is_refused_naming_the_key(tmp_path: Path, secret: str) -> None:
    text = refusal(tmp_path, f'url = "https://pm1.example.org/x"\nsecret = "{secret}"')
    assert f"dispatch.webhooks.ORG-PM1.secret: must be at least {WEBHOOK_SECRET_MIN}" in text
    assert secret == "" or secret not in text  # never echoed


@pytest.mark.parametrize(
    "url", ["http://pm1.example.org/x", "http://127.0.0.1:8080/x", "http://localhost/x"]
)
def test_http_is_refused_without_the_loopback_allowance(tmp_path: Path, url: str) -> None:
    text = refusal(tmp_path, f'url = "{url}"\nsecret = "{KEY}"')
    assert "dispatch.webhooks.ORG-PM1.url: must be https" in text


@pytest.mark.parametrize(
    "url", ["http://pm1.example.org/x", "http://10.0.0.1/x", "http://[::ffff:7f00:1]/x"]
)
def test_the_allowance_admits_http_to_loopback_only(tmp_path: Path, url: str) -> None:
    text = refusal(tmp_path, f'url = "{url}"\nsecret = "{KEY}"\nallow_http_loopback = true')
    assert "dispatch.webhooks.ORG-PM1.url: http is allowed only to 127.0.0.0/8, ::1" in text


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/x", "http://127.3.4.5/x", "http://[::1]:9/x", "http://localhost/"],
)
def test_the_allowance_admits_loopback_http(tmp_path: Path, url: str) -> None:
    body = f'url = "{url}"\nsecret = "{KEY}"\nallow_http_loopback = true'
    assert str(load_settings(hook(tmp_path, body)).dispatch.webhooks["ORG-PM1"].url) == url


@given(st.ip_addresses())
def test_loopback_is_exactly_127_8_and_1(address: object) -> None:
    text = str(address)
    host = f"[{text}]" if ":" in text else text
    assert is_loopback(host) == (text == "::1" or text.startswith("127."))


def test_check_config_refuses_naming_the_key(tmp_path: Path) -> None:
    config = hook(tmp_path, 'url = "http://pm1.example.org/x"\nsecret = ""')
    result = subprocess.run(
        [sys.executable, "-m", "sensord", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 78  # EX_CONFIG
    assert "dispatch.webhooks.ORG-PM1.secret: must be at least" in result.stderr
    # The url is checked once every field is valid on its own.
    config = hook(tmp_path, f'url = "http://pm1.example.org/x"\nsecret = "{KEY}"')
    result = subprocess.run(
        [sys.executable, "-m", "sensord", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 78
    assert "dispatch.webhooks.ORG-PM1.url: must be https" in result.stderr
