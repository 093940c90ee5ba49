"""Fixtures on the real services; see simulators/harness/."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from sensord.adapters.migrations import migrate
from sensord.cli import main as sensord_main
from sensord.paths import shipped
from simulators.district import generate, write
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.database import (
    RUNTIME_PASSWORD,
    create_database,
    drop_database,
    runtime_dsn,
)
from simulators.protocol import SimDevice
from tests.support import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def database_dsn() -> Iterator[str]:
    try:
        dsn = create_database()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"TimescaleDB on 127.0.0.1:5433 is not reachable; run scripts/services up ({exc})"
        )
    migrate(dsn, shipped("migrations"))
    yield dsn
    drop_database(dsn)


@pytest.fixture
def db(database_dsn: str) -> Iterator[psycopg.Connection]:
    """A connection to the test database, emptied before each test."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, dead_letters, devices")
        yield conn


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def devices(db: psycopg.Connection) -> Callable[[int, str], list[SimDevice]]:
    """Register ``n`` devices of one kind in street jd01; returns them."""

    def register(n: int, kind: str = "smoke") -> list[SimDevice]:
        prefix = {"smoke": "SMK", "ebike": "EB", "elevator": "EL", "fire_lane": "FL"}[kind]
        made = [SimDevice(f"{prefix}-{uuid.uuid4().hex[:8]}", kind, "jd01") for _ in range(n)]
        with (
            db.cursor() as cur,
            cur.copy("COPY devices (device_id, kind, street) FROM STDIN") as copy,
        ):
            for device in made:
                copy.write_row((device.device_id, device.kind, device.street))
        return made

    return register


@pytest.fixture
def daemon(tmp_path: Path, broker: Broker, database_dsn: str) -> Iterator[Callable[..., Daemon]]:
    """Factory of daemons on the private broker and the test database; all stopped at the end.

    Each runs as the runtime login (least privilege, migrations/0007) on whatever database
    it is given; ``as_owner`` (or a SENSORD_DATABASE__PASSWORD override) keeps the login given.
    """
    started: list[Daemon] = []

    def make(*, as_owner: bool = False, **overrides: str) -> Daemon:
        env = {
            "SENSORD_DATABASE__DSN": database_dsn,
            "SENSORD_MQTT__PORT": str(broker.port),
            "SENSORD_MQTT__CLIENT_ID": f"sensord-test-{uuid.uuid4().hex[:8]}",
            "SENSORD_INGEST__BATCH_MAX_AGE_MS": "50",
            "SENSORD_INGEST__RETRY_MAX_S": "1",
            "SENSORD_MQTT__RECONNECT_MAX_S": "1",
            "SENSORD_LOG__FORMAT": "text",
            # The fleet simulator runs device time faster than the wall clock (--speedup);
            # tests of the receive-time windows override this with "receive".
            "SENSORD_RULES__CLOCK": "device",
        }
        env.update(overrides)
        # A test that sets the password itself says which login it means.
        if not as_owner and "SENSORD_DATABASE__PASSWORD" not in overrides:
            env["SENSORD_DATABASE__DSN"] = runtime_dsn(env["SENSORD_DATABASE__DSN"])
            env["SENSORD_DATABASE__PASSWORD"] = RUNTIME_PASSWORD  # over config.toml's owner one
        daemon = Daemon(
            env, tmp_path / f"daemon-{len(started)}.log", config=REPO / "config.toml", cwd=REPO
        )
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.process and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)


@pytest.fixture
def demo_district(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[str, Path]]:
    """A database of its own holding the demo district, imported with `sensord registry import`.

    Yields (dsn, the district's CSV directory); SENSORD_DATABASE__DSN points at it.
    """
    dsn = create_database()
    try:
        migrate(dsn, shipped("migrations"))
        monkeypatch.setenv("SENSORD_DATABASE__DSN", dsn)
        district = tmp_path / "district"
        write(generate(1, "demo"), district)
        assert sensord_main(["registry", "import", str(district)]) == 0
        capsys.readouterr()
        yield dsn, district
    finally:
        drop_database(dsn)
