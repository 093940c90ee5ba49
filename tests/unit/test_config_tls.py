"""[mqtt] TLS keys: the files are read at load, a bad one is refused by its key."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from sensord.config import MqttConfig, load_settings
from sensord.errors import ConfigError
from simulators.harness.tls import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def mqtt(tmp_path: Path, **keys: object) -> Path:
    path = tmp_path / "config.toml"
    lines = [
        f"{key} = {str(v).lower() if isinstance(v, bool) else repr(str(v))}"
        for key, v in keys.items()
    ]
    path.write_text("[mqtt]\n" + "\n".join(lines) + "\n")
    return path


def refusal(tmp_path: Path, **keys: object) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(mqtt(tmp_path, **keys))
    return str(refused.value)


def test_off_by_default_and_then_no_context() -> None:
    assert MqttConfig().tls is False and MqttConfig().tls_context() is None


def test_a_ca_and_a_client_certificate_make_a_strict_context(tmp_path: Path, pki: Pki) -> None:
    client = pki.client("sensord-1")
    config = load_settings(
        mqtt(
            tmp_path,
            tls=True,
            tls_ca_file=pki.ca.cert,
            tls_cert_file=client.cert,
            tls_key_file=client.key,
        )
    ).mqtt
    context = config.tls_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_hostname_verification_is_on_unless_turned_off(tmp_path: Path, pki: Pki) -> None:
    config = load_settings(
        mqtt(
            tmp_path,
            tls=True,
            tls_ca_file=pki.ca.cert,
            tls_verify_hostname=False,
            tls_min_version="1.3",
        )
    ).mqtt
    context = config.tls_context()
    assert context is not None and not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still checked
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize("key", ["tls_ca_file", "tls_cert_file", "tls_key_file"])
def test_a_missing_file_is_refused_naming_the_key(tmp_path: Path, pki: Pki, key: str) -> None:
    client = pki.client("sensord-1")
    keys: dict[str, object] = {
        "tls": True,
        "tls_ca_file": pki.ca.cert,
        "tls_cert_file": client.cert,
        "tls_key_file": client.key,
    }
    keys[key] = tmp_path / "nope.pem"
    assert f"mqtt.{key}: cannot read {tmp_path / 'nope.pem'}: No such file" in refusal(
        tmp_path, **keys
    )


def test_an_unreadable_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    # A directory: unreadable as a file even for root, which ignores file modes.
    assert "mqtt.tls_ca_file: cannot read" in refusal(tmp_path, tls=True, tls_ca_file=tmp_path)


def test_a_file_that_is_not_pem_is_refused_naming_the_key(tmp_path: Path, pki: Pki) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert "mqtt.tls_ca_file: no CA certificate" in refusal(tmp_path, tls=True, tls_ca_file=junk)
    assert "mqtt.tls_cert_file: not a PEM certificate" in refusal(
        tmp_path, tls=True, tls_ca_file=pki.ca.cert, tls_cert_file=junk
    )


def test_a_key_of_another_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    mine, theirs = pki.client("a"), pki.client("b")
    text = refusal(
        tmp_path,
        tls=True,
        tls_ca_file=pki.ca.cert,
        tls_cert_file=mine.cert,
        tls_key_file=theirs.key,
    )
    assert "mqtt.tls_key_file:" in text


def test_an_encrypted_key_is_refused_not_prompted_for(tmp_path: Path, pki: Pki) -> None:
    client = pki.client("enc")
    locked = tmp_path / "locked.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(client.key),
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            str(locked),
        ],
        check=True,
    )
    text = refusal(
        tmp_path, tls=True, tls_ca_file=pki.ca.cert, tls_cert_file=client.cert, tls_key_file=locked
    )
    assert "mqtt.tls_key_file:" in text and "encrypted" in text


def test_files_without_tls_and_a_key_without_a_certificate_are_refused(
    tmp_path: Path, pki: Pki
) -> None:
    assert "mqtt.tls_ca_file: is set but tls = false" in refusal(tmp_path, tls_ca_file=pki.ca.cert)
    assert "mqtt.tls_key_file: needs tls_cert_file" in refusal(
        tmp_path, tls=True, tls_key_file=pki.server.key
    )


def test_check_config_refuses_naming_the_key(tmp_path: Path) -> None:
    config = mqtt(tmp_path, tls=True, tls_ca_file=tmp_path / "gone.crt")
    result = subprocess.run(
        [sys.executable, "-m", "sensord", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 78  # EX_CONFIG
    assert "mqtt.tls_ca_file: cannot read" in result.stderr
