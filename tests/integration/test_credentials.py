"""`sensord credentials` and `sensord broker config` on the real database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from sensord.cli import main as sensord_main
from sensord.core.principals import verify_secret
from simulators.protocol import SimDevice


def secret_of(capsys: pytest.CaptureFixture[str]) -> str:
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    return lines["password"]


def test_issue_rotate_revoke(
    tmp_path: Path,
    database_dsn: str,
    db: psycopg.Connection,
    devices: Callable[[int, str], list[SimDevice]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENSORD_DATABASE__DSN", database_dsn)
    db.execute("TRUNCATE principals")
    one, two = devices(2, "smoke")
    assert sensord_main(["credentials", "issue", "device", one.device_id]) == 0
    first = secret_of(capsys)
    # Only the hash is stored; issuing twice is refused; an unknown device too.
    (stored,) = db.execute("SELECT secret_hash FROM principals").fetchone()  # type: ignore[misc]
    assert first not in stored and verify_secret(first, stored)
    assert sensord_main(["credentials", "issue", "device", one.device_id]) == 1
    assert sensord_main(["credentials", "issue", "device", "ghost"]) == 1
    assert sensord_main(["credentials", "issue", "gateway", "gw"]) == 2  # no --devices
    assert sensord_main(["credentials", "issue", "gateway", "gw", "--devices", two.device_id]) == 0
    capsys.readouterr()
    assert sensord_main(["credentials", "rotate", "device", one.device_id]) == 0
    second = secret_of(capsys)
    (rotated,) = db.execute("SELECT secret_hash FROM principals WHERE kind = 'device'").fetchone()  # type: ignore[misc]
    assert verify_secret(second, rotated) and not verify_secret(first, rotated)
    assert sensord_main(["broker", "config", "--out", str(tmp_path / "a")]) == 0
    passwords = (tmp_path / "a" / "passwords").read_text()
    assert f"device.{one.device_id}:{rotated}" in passwords
    acl = (tmp_path / "a" / "acl").read_text()
    assert f"topic write sensord/v1/jd01/smoke/{two.device_id}" in acl.split("user gateway.gw")[1]
    # Revoked: gone from the generated files, and cannot be revoked or rotated again.
    assert sensord_main(["credentials", "revoke", "device", one.device_id]) == 0
    assert sensord_main(["credentials", "revoke", "device", one.device_id]) == 1
    assert sensord_main(["credentials", "rotate", "device", one.device_id]) == 1
    assert sensord_main(["broker", "config", "--out", str(tmp_path / "a")]) == 0
    assert f"device.{one.device_id}" not in (tmp_path / "a" / "passwords").read_text()
    assert f"user device.{one.device_id}" not in (tmp_path / "a" / "acl").read_text()
    # ...and may be issued anew.
    assert sensord_main(["credentials", "issue", "device", one.device_id]) == 0
    capsys.readouterr()
    assert sensord_main(["credentials", "list"]) == 0
    assert f"device.{one.device_id}  active" in capsys.readouterr().out
