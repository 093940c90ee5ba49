"""The broker connection over TLS: a real Mosquitto TLS listener, certificates made at test time."""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from sensord.adapters.mqtt_publisher import MqttPublisher
from sensord.config import MqttConfig
from simulators.harness.broker import Broker, ListenerTls
from simulators.harness.daemon import Daemon
from simulators.harness.processes import wait_until
from simulators.harness.tls import CertFiles, Pki, issue, make_ca
from simulators.protocol import SimDevice
from simulators.publisher import ClientTls, Publisher
from tests.integration.test_ingest import count, valid_messages

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


def listener(pki: Pki, server: CertFiles | None = None, **options: bool) -> ListenerTls:
    server = server or pki.server
    return ListenerTls(pki.ca.cert, server.cert, server.key, **options)


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    """Overrides the plain broker of conftest: the daemon fixture connects to this one."""
    broker = Broker(tmp_path / "broker", tls=listener(pki))
    broker.start()
    yield broker
    broker.stop()


def tls_env(ca: Path, client: CertFiles | None = None, **extra: str) -> dict[str, str]:
    env = {"SENSORD_MQTT__TLS": "true", "SENSORD_MQTT__TLS_CA_FILE": str(ca), **extra}
    if client is not None:
        env["SENSORD_MQTT__TLS_CERT_FILE"] = str(client.cert)
        env["SENSORD_MQTT__TLS_KEY_FILE"] = str(client.key)
    return env


def refusals(daemon: Daemon, reason: str) -> int:
    """How many connect attempts the daemon logged as failed for ``reason``."""
    lines = daemon.log_path.read_text(errors="replace").splitlines()
    return sum("broker unreachable" in line and reason in line for line in lines)


def test_readings_over_tls_are_stored_and_acknowledged_only_after_commit(
    db: psycopg.Connection,
    broker: Broker,
    pki: Pki,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    fleet = devices(20)
    client_id = f"sensord-tls-{uuid.uuid4().hex[:8]}"
    env = tls_env(pki.ca.cert, SENSORD_MQTT__CLIENT_ID=client_id)
    # Batches wait 30 s: the readings sit in memory, uncommitted, when the daemon is killed.
    first = daemon(SENSORD_INGEST__BATCH_MAX_AGE_MS="30000", **env)
    first.start()
    messages = valid_messages(fleet, per_device=10)
    with Publisher(port=broker.port, tls=ClientTls(pki.ca.cert)) as publisher:
        publisher.publish(messages)
    wait_until(
        lambda: first.metrics()["sensord_ingest_in_flight_messages"] == len(messages),
        20,
        "all buffered",
    )
    first.kill()
    assert count(db, "readings") == 0
    # Nothing was acknowledged before its commit, so the broker hands every message again.
    second = daemon(**env)
    second.start()
    wait_until(lambda: count(db, "readings") == len(messages), 20, "every message stored")
    assert second.metrics()["sensord_ingest_stored_readings_total"] == len(messages)
    assert second.terminate() == 0


def test_a_broker_certificate_from_another_ca_is_refused_and_retried(
    broker: Broker, tmp_path: Path, daemon: Callable[..., Daemon]
) -> None:
    stranger = make_ca(tmp_path / "other", subject="someone else's CA")
    sensord = daemon(**tls_env(stranger.cert))
    sensord.start(wait_ready=False)
    wait_until(
        lambda: refusals(sensord, "certificate verify failed") >= 3, 30, "three refused attempts"
    )
    assert sensord.process is not None and sensord.process.poll() is None  # retrying, not dead
    assert sensord.metrics().get("sensord_mqtt_connected") == 0.0
    assert sensord.terminate() == 0


def test_a_broker_certificate_for_another_name_is_refused_unless_verification_is_off(
    tmp_path: Path, pki: Pki, daemon: Callable[..., Daemon]
) -> None:
    elsewhere = issue(pki.ca, pki.directory, "elsewhere", hosts=("broker.invalid",))
    other = Broker(tmp_path / "other-broker", tls=listener(pki, elsewhere))
    other.start()
    try:
        port = {"SENSORD_MQTT__PORT": str(other.port)}
        strict = daemon(**tls_env(pki.ca.cert, **port))
        strict.start(wait_ready=False)
        wait_until(lambda: refusals(strict, "mismatch") >= 2, 30, "two refused attempts")
        assert strict.process is not None and strict.process.poll() is None
        assert strict.terminate() == 0

        lax = daemon(**tls_env(pki.ca.cert, SENSORD_MQTT__TLS_VERIFY_HOSTNAME="false", **port))
        lax.start()  # connected: the chain is still checked, only the name is not
        assert "hostname verification is OFF" in lax.log_path.read_text()
        assert lax.terminate() == 0
    finally:
        other.stop()


class _AclBroker(Broker):
    acl: str = ""

    def overrides(self) -> str:
        path = self.workdir / "acl"
        path.write_text(self.acl)
        return super().overrides() + f"acl_file {path}\n"


def test_client_certificates_are_the_identity(
    db: psycopg.Connection,
    tmp_path: Path,
    pki: Pki,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    device = devices(1)[0]
    device_topic = f"sensord/v1/{device.street}/{device.kind}/{device.device_id}"
    mutual = _AclBroker(
        tmp_path / "mtls-broker",
        tls=listener(pki, require_certificate=True, use_identity_as_username=True),
    )
    # The user names are the certificates' CNs; the device may write its own topic only.
    mutual.acl = (
        "user sensord-tls\ntopic readwrite sensord/v1/#\n"
        f"user {device.device_id}\ntopic write {device_topic}\n"
    )
    mutual.start()
    try:
        # Without a certificate the handshake is refused (TLS 1.3: on the first read).
        with (
            socket.create_connection(("127.0.0.1", mutual.port), timeout=10) as raw,
            pytest.raises((ssl.SSLError, ConnectionResetError)),
        ):
            anonymous = ssl.create_default_context(cafile=str(pki.ca.cert))
            with anonymous.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"\x10\x00")
                if not tls.recv(1):
                    raise ConnectionResetError("closed")

        sensord = daemon(
            **tls_env(pki.ca.cert, pki.client("sensord-tls"), SENSORD_MQTT__PORT=str(mutual.port))
        )
        sensord.start()
        forged, real = valid_messages([device], per_device=2)
        intruder = pki.client("intruder")
        with Publisher(
            port=mutual.port, tls=ClientTls(pki.ca.cert, intruder.cert, intruder.key)
        ) as p:
            p.publish([forged])  # the ACL drops it: "intruder" may write nothing
        own = pki.client(device.device_id)
        with Publisher(port=mutual.port, tls=ClientTls(pki.ca.cert, own.cert, own.key)) as p:
            p.publish([real])
        wait_until(lambda: count(db, "readings") == 1, 20, "the device's reading stored")
        # The forged one came first on the broker; had it passed, it would be stored by now.
        assert db.execute("SELECT seq FROM readings").fetchall() == [(1,)]
        assert sensord.terminate() == 0

        # The notification publisher goes through the same connect helper, certificate and all.
        mine = pki.client("sensord-tls")
        config = MqttConfig(
            port=mutual.port, client_id=f"sensord-tls-{uuid.uuid4().hex[:6]}", tls=True,
            tls_ca_file=str(pki.ca.cert), tls_cert_file=str(mine.cert),
            tls_key_file=str(mine.key),
        )  # fmt: skip

        async def notify() -> None:
            publisher = MqttPublisher(config)
            await asyncio.wait_for(publisher.start(), 20)
            try:
                await publisher.publish("sensord/v1/jd01/dispatch/ORG-T", b"{}", timeout_s=10)
            finally:
                await publisher.stop()

        asyncio.run(notify())  # connected with its certificate, the publish PUBACKed
    finally:
        mutual.stop()
