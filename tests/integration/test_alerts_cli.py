"""``sensord alerts`` and ``sensord silence`` on a real database holding the demo registry.

Alerts are inserted directly (the pipeline that makes them is tested in
test_alerts.py); silences are made by the command line and then applied by
the real store (``alert_store.apply_evaluation``) to effects of the shipped rules.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from sensord.adapters.alert_store import apply_evaluation
from sensord.adapters.migrations import migrate
from sensord.adapters.rule_files import load_rules
from sensord.cli import main as sensord_main
from sensord.core.rules.engine import Effect, Evaluation, subject_of
from sensord.core.rules.state import Outcome
from sensord.paths import shipped
from simulators.district import generate, write
from simulators.harness.database import create_database, drop_database
from tests.support import REPO

pytestmark = pytest.mark.integration

RULES = {rule.name: rule for rule in load_rules(REPO / "rules").rules}
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def registry_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database with the schema and the demo district's registry."""
    dsn = create_database()
    migrate(dsn, shipped("migrations"))
    district = tmp_path_factory.mktemp("district")
    write(generate(1, "demo"), district)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENSORD_DATABASE__DSN", dsn)
        assert sensord_main(["registry", "import", str(district)]) == 0
    yield dsn
    drop_database(dsn)


@pytest.fixture
def db(registry_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    """The registry database with no alerts, events, states or silences; the CLI pointed at it."""
    monkeypatch.setenv("SENSORD_DATABASE__DSN", registry_dsn)
    with psycopg.connect(registry_dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE alerts, alert_events, rule_state, silences,"
            " work_orders, work_order_events, outbox RESTART IDENTITY"
        )
        yield conn


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``sensord ARGV``: exit status, stdout, stderr."""
    capsys.readouterr()
    code = sensord_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def insert_alert(
    db: psycopg.Connection,
    rule: str,
    device_id: str,
    *,
    state: str = "firing",
    address_id: str | None = None,
    ago_s: float = 600,
) -> int:
    r = RULES[rule]
    seen = NOW - timedelta(seconds=ago_s)
    row = db.execute(
        "INSERT INTO alerts (rule, category, severity, safety, subject, device_id, address_id,"
        " state, first_seen, last_seen, cleared_at, clear_reason)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            r.name,
            r.category,
            r.severity,
            r.safety,
            subject_of(device_id),
            device_id,
            address_id,
            state,
            seen,
            seen + timedelta(seconds=60),
            seen + timedelta(seconds=120) if state == "cleared" else None,
            "condition cleared" if state == "cleared" else None,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def placed_device(
    db: psycopg.Connection, kind: str, not_in: str | None = None
) -> tuple[str, str, str | None]:
    """A placed device of ``kind`` outside building ``not_in``: (device, address, building)."""
    row = db.execute(
        "SELECT d.device_id, d.address_id, a.building_id FROM devices d"
        " JOIN addresses a USING (address_id)"
        " WHERE d.kind = %s AND a.building_id IS DISTINCT FROM %s"
        " ORDER BY a.building_id IS NULL, d.device_id LIMIT 1",
        (kind, not_in or ""),
    ).fetchone()
    assert row is not None, f"the demo district has no placed {kind} device"
    return str(row[0]), str(row[1]), None if row[2] is None else str(row[2])


def events(db: psycopg.Connection, alert_id: int) -> list[tuple[str, str, str]]:
    return [
        (str(e), str(a), str(d))
        for e, a, d in db.execute(
            "SELECT event, actor, detail FROM alert_events WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        ).fetchall()
    ]


# --- alerts list ----------------------------------------------------------------------


def test_list_shows_open_alerts_as_json_and_as_a_table(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = insert_alert(db, "smoke_alarm", "SMK-A", address_id=None, ago_s=60)
    lane = insert_alert(db, "fire_lane_blocked", "FL-A", ago_s=1200)
    old = insert_alert(db, "elevator_fault", "EL-A", state="cleared", ago_s=5000)

    code, out, _ = cli(capsys, "alerts", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [a["id"] for a in listed] == [smoke, lane]  # open only, latest seen first
    first = listed[0]
    assert {
        "id",
        "rule",
        "category",
        "severity",
        "state",
        "subject",
        "device_id",
        "count",
        "first_seen",
        "last_seen",
        "address_id",
        "cleared_at",
        "clear_reason",
        "silenced_by",
        "safety",
    } <= set(first)
    assert (first["rule"], first["category"], first["severity"]) == ("smoke_alarm", "fire", "major")
    assert (first["state"], first["subject"], first["device_id"]) == (
        "firing",
        "device:SMK-A",
        "SMK-A",
    )
    assert first["count"] == 1 and first["safety"] is True and first["silenced_by"] is None
    assert datetime.fromisoformat(first["first_seen"]) == (NOW - timedelta(seconds=60))

    code, out, _ = cli(capsys, "alerts", "list", "--state", "cleared", "--json")
    assert [a["id"] for a in json.loads(out)] == [old]
    code, out, _ = cli(capsys, "alerts", "list", "--state", "all", "--json", "--limit", "2")
    assert [a["id"] for a in json.loads(out)] == [smoke, lane]

    code, out, _ = cli(capsys, "alerts", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["ID", "STATE", "SEVERITY", "RULE", "SUBJECT"]
    assert len(rows) == 2 and "safety" in rows[0]
    for column in ("RULE", "SUBJECT", "LAST SEEN"):  # every row starts each column at one place
        at = header.index(column)
        assert all(row[at - 1] == " " and row[at] != " " for row in rows), (column, out)


def test_list_says_when_there_is_nothing(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "alerts", "list") == (0, "no open alerts\n", "")
    assert cli(capsys, "alerts", "list", "--json") == (0, "[]\n", "")


# --- ack and clear ----------------------------------------------------------------------


def test_ack_moves_a_firing_alert_to_acknowledged_once(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = insert_alert(db, "fire_lane_blocked", "FL-A")
    code, out, _ = cli(capsys, "alerts", "ack", str(alert), "--by", "wang.li")
    assert code == 0 and f"alert {alert}" in out
    row = db.execute(
        "SELECT state, acknowledged_by, acknowledged_at > now() - interval '1 minute'"
        " FROM alerts WHERE id = %s",
        (alert,),
    ).fetchone()
    assert row == ("acknowledged", "wang.li", True)
    assert events(db, alert) == [("acknowledged", "wang.li", "")]

    code, _, err = cli(capsys, "alerts", "ack", str(alert), "--by", "zhao")
    assert code == 1 and "already acknowledged (by wang.li" in err
    cleared = insert_alert(db, "elevator_fault", "EL-A", state="cleared")
    code, _, err = cli(capsys, "alerts", "ack", str(cleared), "--by", "zhao")
    assert code == 1 and "already cleared" in err
    assert events(db, alert) == [("acknowledged", "wang.li", "")]


def test_clear_by_hand_records_reason_actor_and_time(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = insert_alert(db, "fire_lane_blocked", "FL-A")
    cli(capsys, "alerts", "ack", str(alert), "--by", "wang.li")  # acknowledged alerts clear too
    code, out, err = cli(
        capsys,
        "alerts",
        "clear",
        str(alert),
        "--reason",
        "van moved, checked on site",
        "--by",
        "li",
    )
    assert code == 0, err
    assert f"alert {alert}" in out and "cleared by li" in out
    row = db.execute(
        "SELECT state, clear_reason, cleared_at > now() - interval '1 minute' FROM alerts"
        " WHERE id = %s",
        (alert,),
    ).fetchone()
    assert row == ("cleared", "van moved, checked on site", True)
    assert events(db, alert)[-1] == ("cleared", "li", "van moved, checked on site")

    code, out, _ = cli(capsys, "alerts", "list", "--state", "cleared", "--json")
    (listed,) = json.loads(out)
    assert (listed["state"], listed["clear_reason"]) == ("cleared", "van moved, checked on site")
    assert listed["cleared_at"] is not None


def test_clearing_twice_or_an_unknown_alert_fails_with_a_clear_message(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = insert_alert(db, "fire_lane_blocked", "FL-A")
    assert cli(capsys, "alerts", "clear", str(alert), "--reason", "done", "--by", "li")[0] == 0
    code, out, err = cli(capsys, "alerts", "clear", str(alert), "--reason", "again", "--by", "li")
    assert code == 1 and out == ""
    assert f"alert {alert} is already cleared" in err and "done" in err
    assert [e for e, *_ in events(db, alert)] == ["cleared"]  # the refusal wrote nothing

    code, _, err = cli(capsys, "alerts", "clear", "999999", "--reason", "x")
    assert code == 1 and "no alert 999999" in err
    code, _, err = cli(capsys, "alerts", "ack", "999999", "--by", "li")
    assert code == 1 and "no alert 999999" in err


def test_clearing_an_alert_whose_condition_still_holds_says_so(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = insert_alert(db, "fire_lane_blocked", "FL-A")
    db.execute(
        "INSERT INTO rule_state (rule, subject, state) VALUES (%s, %s, %s)",
        ("fire_lane_blocked", "device:FL-A", json.dumps({"phase": "firing"})),
    )
    code, _, err = cli(capsys, "alerts", "clear", str(alert), "--reason", "test", "--by", "li")
    assert code == 0 and "still held" in err


# --- silences --------------------------------------------------------------------------


def test_a_silence_naming_a_safety_rule_is_refused(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    device, _, _ = placed_device(db, "smoke")
    for rule in ("smoke_alarm", "ebike_indoor_charging", "elevator_entrapment"):
        code, out, err = cli(
            capsys,
            "silence",
            "add",
            "--kind",
            "smoke",
            "--for",
            "2h",
            "--author",
            "li",
            "--reason",
            "detector replacement",
            "--rule",
            "battery_low",
            "--rule",
            rule,
        )
        assert code == 1 and out == ""
        assert rule in err and "silences cannot mute safety rules" in err
    code, _, err = cli(
        capsys,
        "silence",
        "add",
        "--device",
        device,
        "--for",
        "1h",
        "--author",
        "li",
        "--reason",
        "test",
        "--rule",
        "smoke_alarm",
    )
    assert code == 1 and "smoke_alarm" in err and "safety" in err
    assert db.execute("SELECT count(*) FROM silences").fetchone() == (0,)


def test_silence_add_list_and_expire(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    device, _, _ = placed_device(db, "fire_lane")
    _, _, building = placed_device(db, "elevator")
    assert building is not None
    code, out, err = cli(
        capsys,
        "silence",
        "add",
        "--device",
        device,
        "--for",
        "2h",
        "--author",
        "wang.li",
        "--reason",
        "lane resurfacing",
        "--rule",
        "fire_lane_blocked",
    )
    assert code == 0, err
    assert out.startswith("silence 1 created: device " + device)
    assert "mutes only: fire_lane_blocked" in out

    code, out, _ = cli(
        capsys,
        "silence",
        "add",
        "--building",
        building,
        "--from",
        "now",
        "--until",
        (NOW + timedelta(days=1)).isoformat(),
        "--author",
        "li",
        "--reason",
        "renovation",
    )
    assert code == 0
    assert "silence 2 created: building " + building in out
    assert "non-safety rules only" in out and "smoke_alarm" in out  # says what it cannot mute

    later = (NOW + timedelta(hours=5)).isoformat()
    code, _, err = cli(
        capsys,
        "silence",
        "add",
        "--kind",
        "elevator",
        "--from",
        later,
        "--for",
        "1h",
        "--author",
        "li",
        "--reason",
        "annual inspection",
    )
    assert code == 0, err

    code, out, _ = cli(capsys, "silence", "list", "--json")
    listed = json.loads(out)
    assert [(s["id"], s["status"], s["scope"]) for s in listed] == [
        (1, "active", "device"),
        (2, "active", "building"),
        (3, "pending", "kind"),
    ]
    assert listed[0]["rules"] == ["fire_lane_blocked"] and listed[1]["rules"] == []
    assert (listed[0]["author"], listed[0]["reason"]) == ("wang.li", "lane resurfacing")
    ends = datetime.fromisoformat(listed[0]["ends_at"]) - datetime.fromisoformat(
        listed[0]["starts_at"]
    )
    assert ends == timedelta(hours=2)

    code, out, _ = cli(capsys, "silence", "list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "STATUS", "SCOPE"]
    assert len(out.splitlines()) == 4

    code, out, _ = cli(capsys, "silence", "expire", "1", "--by", "wang.li")
    assert code == 0 and "silence 1" in out
    assert db.execute(
        "SELECT expired_by, expired_at IS NOT NULL FROM silences WHERE id = 1"
    ).fetchone() == ("wang.li", True)
    code, _, err = cli(capsys, "silence", "expire", "1", "--by", "li")
    assert code == 1 and "already expired (by wang.li" in err
    code, _, err = cli(capsys, "silence", "expire", "99", "--by", "li")
    assert code == 1 and "no silence 99" in err

    code, out, _ = cli(capsys, "silence", "list", "--json")
    assert [s["id"] for s in json.loads(out)] == [2, 3]
    code, out, _ = cli(capsys, "silence", "list", "--all", "--json")
    assert [(s["id"], s["status"]) for s in json.loads(out)] == [
        (1, "expired"),
        (2, "active"),
        (3, "pending"),
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--until", "2030-01-01T00:00Z", "--from", "2030-02-01T00:00Z"], "must end after"),
        (["--until", "2020-01-01T00:00+08:00"], "already be over"),
        (["--until", "2030-01-01T08:00"], "no UTC offset"),
        (["--until", "tomorrow"], "not an ISO 8601 time"),
        (["--for", "2 hours"], "not a duration"),
        (["--for", "0m"], "longer than nothing"),
        (["--for", "999999999d"], "too long"),
    ],
)
def test_silence_times_are_checked(
    db: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    code, _, err = cli(
        capsys,
        "silence",
        "add",
        "--kind",
        "fire_lane",
        "--author",
        "li",
        "--reason",
        "x",
        *arguments,
    )
    assert code == 2 and message in err
    assert db.execute("SELECT count(*) FROM silences").fetchone() == (0,)


def test_silence_scope_rules_and_author_are_checked(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["silence", "add", "--for", "1h", "--author", "li", "--reason", "x"]
    code, _, err = cli(capsys, *base, "--device", "SMK-nowhere")
    assert code == 1 and "no device 'SMK-nowhere' in the registry" in err
    code, _, err = cli(capsys, *base, "--building", "B-nowhere")
    assert code == 1 and "no building 'B-nowhere' in the registry" in err
    code, _, err = cli(capsys, *base, "--kind", "smoke", "--rule", "no_such_rule")
    assert code == 1 and "no rule 'no_such_rule'" in err
    code, _, err = cli(capsys, *base, "--kind", "smoke", "--rule", "fire_lane_blocked")
    assert code == 1 and "never smoke" in err
    for bad in (
        ["--kind", "gas"],
        ["--kind", "smoke", "--author", " "],
        ["--kind", "smoke", "--reason", ""],
        ["--for", "1h"],
    ):
        with pytest.raises(SystemExit) as exited:
            cli(capsys, *base, *bad)
        assert exited.value.code == 2
    assert db.execute("SELECT count(*) FROM silences").fetchone() == (0,)


def _fire(dsn: str, effects: list[Effect]) -> None:
    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor() as cur:
            await apply_evaluation(cur, Evaluation(effects=effects))

    asyncio.run(apply())


def _effect(
    rule: str,
    device: str,
    address: str | None,
    outcome: Outcome = Outcome.FIRED,
    at: datetime | None = None,
) -> Effect:
    return Effect(
        outcome,
        RULES[rule],
        subject_of(device),
        device,
        address,
        at or datetime.now(UTC),
        RULES[rule].severity,
    )


def test_the_store_honours_silences_made_here_but_never_for_safety_rules(
    db: psycopg.Connection, registry_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    elevator, elevator_address, building = placed_device(db, "elevator")
    smoke, smoke_address, _ = placed_device(db, "smoke", not_in=building)
    lane, lane_address, _ = placed_device(db, "fire_lane", not_in=building)
    assert building is not None
    base = ["--for", "1h", "--author", "li", "--reason", "maintenance"]
    for scope in (
        ["--building", building],  # 1: every non-safety rule in the elevator's building
        ["--address", smoke_address],  # 2
        ["--device", lane, "--rule", "fire_lane_blocked"],  # 3: this rule only
    ):
        assert cli(capsys, "silence", "add", *scope, *base)[0] == 0
    _fire(
        registry_dsn,
        [
            _effect("elevator_fault", elevator, elevator_address),
            _effect("battery_low", elevator, elevator_address),
            _effect("elevator_entrapment", elevator, elevator_address),
            _effect("smoke_alarm", smoke, smoke_address),
            _effect("battery_low", smoke, smoke_address),
            _effect("fire_lane_blocked", lane, lane_address),
            _effect("battery_low", lane, lane_address),
        ],
    )
    out = cli(capsys, "alerts", "list", "--json")[1]
    silenced = {(a["rule"], a["device_id"]): a["silenced_by"] for a in json.loads(out)}
    assert silenced == {
        ("elevator_fault", elevator): 1,
        ("battery_low", elevator): 1,
        ("elevator_entrapment", elevator): None,  # safety: never muted
        ("smoke_alarm", smoke): None,  # safety
        ("battery_low", smoke): 2,
        ("fire_lane_blocked", lane): 3,
        ("battery_low", lane): None,  # not the rule the silence names
    }
    alert = db.execute("SELECT id FROM alerts WHERE rule = 'fire_lane_blocked'").fetchone()
    assert alert is not None
    assert [e for e, *_ in events(db, alert[0])] == ["fired", "silenced"]

    # An expired silence mutes nothing more.
    assert cli(capsys, "silence", "expire", "3", "--by", "li")[0] == 0
    db.execute("TRUNCATE alerts, alert_events, work_orders, work_order_events, outbox")
    _fire(registry_dsn, [_effect("fire_lane_blocked", lane, lane_address)])
    assert db.execute("SELECT silenced_by FROM alerts").fetchall() == [(None,)]


# --- silences by kind and by scope -----------------------------------------------------


def test_a_kind_silence_mutes_only_devices_of_that_kind(
    db: psycopg.Connection, registry_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    elevator, elevator_address, _ = placed_device(db, "elevator")
    base = ["--for", "1h", "--author", "li", "--reason", "detector replacement"]
    assert cli(capsys, "silence", "add", "--kind", "smoke", *base)[0] == 0
    _fire(registry_dsn, [_effect("battery_low", elevator, elevator_address)])
    assert db.execute("SELECT silenced_by FROM alerts").fetchall() == [(None,)]


def test_a_reopened_alert_is_checked_against_the_silences_in_force(
    db: psycopg.Connection, registry_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lane, address, _ = placed_device(db, "fire_lane")
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).isoformat()
    base = ["--from", start, "--for", "2h", "--author", "li", "--reason", "resurfacing"]
    assert cli(capsys, "silence", "add", "--device", lane, *base)[0] == 0
    rule = "fire_lane_blocked"
    _fire(registry_dsn, [_effect(rule, lane, address, at=now - timedelta(seconds=90))])
    assert db.execute("SELECT silenced_by FROM alerts").fetchall() == [(1,)]
    _fire(
        registry_dsn, [_effect(rule, lane, address, Outcome.CLEARED, now - timedelta(seconds=60))]
    )
    assert cli(capsys, "silence", "expire", "1", "--by", "li")[0] == 0
    _fire(registry_dsn, [_effect(rule, lane, address, Outcome.REOPENED, now)])
    assert db.execute("SELECT state, silenced_by FROM alerts").fetchall() == [("firing", None)]


def test_the_commands_refuse_a_schema_without_the_silence_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dsn = create_database()
    try:
        old = tmp_path / "migrations"
        old.mkdir()
        for path in sorted(shipped("migrations").glob("000[1-3]_*.sql")):
            (old / path.name).write_text(path.read_text())
        migrate(dsn, old)
        monkeypatch.setenv("SENSORD_DATABASE__DSN", dsn)
        code, _, err = cli(capsys, "silence", "list")
        assert code == 1 and "run `sensord migrate`" in err
    finally:
        drop_database(dsn)
