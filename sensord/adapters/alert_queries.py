"""The SQL of ``sensord alerts`` and ``sensord silence`` (the operators' command line).

One short transaction per command. Every UPDATE names the state it expects
(``state = 'firing'``, ``expired_at IS NULL``), so when the daemon or another
operator changed the row first the command refuses and says why instead of
overwriting; every change to an alert writes its ``alert_events`` row, with
the operator as actor, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row

from sensord.errors import SensordError

AlertFilter = Literal["open", "firing", "acknowledged", "cleared", "all"]
Scope = Literal["device", "address", "building", "kind"]

_ALERT_COLUMNS = (
    "id, rule, category, severity, safety, state, subject, device_id, address_id, count,"
    " first_seen, last_seen, cleared_at, clear_reason, acknowledged_at, acknowledged_by,"
    " silenced_by"
)
_SILENCE_COLUMNS = (
    "id, scope, value, rules, starts_at, ends_at, author, reason, created_at, expired_at,"
    " expired_by, CASE WHEN expired_at IS NOT NULL THEN 'expired'"
    " WHEN ends_at <= now() THEN 'ended' WHEN starts_at > now() THEN 'pending'"
    " ELSE 'active' END AS status"
)


class Refused(SensordError):
    """The command does not apply to the alert or silence as it stands; the message says why."""

    def __init__(self, message: str, ident: int | None = None) -> None:
        super().__init__(message)
        self.ident = ident


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert as the command line shows it."""

    id: int
    rule: str
    category: str
    severity: str
    safety: bool
    state: str
    subject: str
    device_id: str | None
    address_id: str | None
    count: int
    first_seen: datetime
    last_seen: datetime
    cleared_at: datetime | None
    clear_reason: str | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    silenced_by: int | None


@dataclass(frozen=True, slots=True)
class SilenceRow:
    """A silence; ``status`` is active, pending, ended or expired (ended early by hand)."""

    id: int
    scope: str
    value: str
    rules: list[str]
    starts_at: datetime
    ends_at: datetime
    author: str
    reason: str
    created_at: datetime
    expired_at: datetime | None
    expired_by: str | None
    status: str


@dataclass(frozen=True, slots=True)
class NewSilence:
    """A validated silence to create (validation: sensord.cli.silence)."""

    scope: Scope
    value: str
    starts_at: datetime
    ends_at: datetime
    author: str
    reason: str
    rules: tuple[str, ...] = ()


# --- alerts -----------------------------------------------------------------------


async def list_alerts(
    conn: psycopg.AsyncConnection, which: AlertFilter, limit: int
) -> list[AlertRow]:
    """Alerts in ``which`` state ("open": firing or acknowledged), the latest first."""
    where = {
        "open": "state <> 'cleared'",
        "firing": "state = 'firing'",
        "acknowledged": "state = 'acknowledged'",
        "cleared": "state = 'cleared'",
        "all": "true",
    }[which]
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {where}"
            " ORDER BY last_seen DESC, id DESC LIMIT %s",
            (limit,),
        )
        return await cur.fetchall()


async def get_alert(conn: psycopg.AsyncConnection, alert_id: int) -> AlertRow | None:
    """One alert, if it exists."""
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = %s", (alert_id,))
        return await cur.fetchone()


async def acknowledge(conn: psycopg.AsyncConnection, alert_id: int, by: str) -> AlertRow:
    """firing -> acknowledged, by ``by``; Refused when the alert is not firing."""
    async with conn.transaction(), conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(),"
            " acknowledged_by = %s, updated_at = now() WHERE id = %s AND state = 'firing'"
            f" RETURNING {_ALERT_COLUMNS}",
            (by, alert_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise Refused(await _why_not(conn, alert_id, "acknowledge"), alert_id)
        await _event(conn, alert_id, "acknowledged", by, "")
        return row


async def clear(conn: psycopg.AsyncConnection, alert_id: int, reason: str, by: str) -> AlertRow:
    """An open alert -> cleared now, with ``reason``; Refused when already cleared."""
    async with conn.transaction(), conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            "UPDATE alerts SET state = 'cleared', cleared_at = now(), clear_reason = %s,"
            " updated_at = now() WHERE id = %s AND state <> 'cleared'"
            f" RETURNING {_ALERT_COLUMNS}",
            (reason, alert_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise Refused(await _why_not(conn, alert_id, "clear"), alert_id)
        await _event(conn, alert_id, "cleared", by, reason)
        return row


async def condition_still_holds(conn: psycopg.AsyncConnection, rule: str, subject: str) -> bool:
    """Whether the rule engine's persisted state for the pair is still firing."""
    cur = await conn.execute(
        "SELECT state->>'phase' FROM rule_state WHERE rule = %s AND subject = %s",
        (rule, subject),
    )
    row = await cur.fetchone()
    return row is not None and row[0] == "firing"


async def _why_not(conn: psycopg.AsyncConnection, alert_id: int, action: str) -> str:
    alert = await get_alert(conn, alert_id)
    if alert is None:
        return f"no alert {alert_id}"
    if alert.state == "cleared":
        when = alert.cleared_at.isoformat(timespec="seconds") if alert.cleared_at else "?"
        return f"alert {alert_id} is already cleared (at {when}: {alert.clear_reason or '-'})"
    if alert.state == "acknowledged" and action == "acknowledge":
        when = alert.acknowledged_at.isoformat(timespec="seconds") if alert.acknowledged_at else "?"
        return f"alert {alert_id} is already acknowledged (by {alert.acknowledged_by} at {when})"
    return f"cannot {action} alert {alert_id} in state {alert.state}"


async def _event(
    conn: psycopg.AsyncConnection, alert_id: int, event: str, actor: str, detail: str
) -> None:
    await conn.execute(
        "INSERT INTO alert_events (alert_id, event, actor, detail) VALUES (%s, %s, %s, %s)",
        (alert_id, event, actor, detail),
    )


# --- silences ---------------------------------------------------------------------


async def device_kind(conn: psycopg.AsyncConnection, device_id: str) -> str | None:
    """The registered kind of a device, or None when it is not registered."""
    cur = await conn.execute("SELECT kind FROM devices WHERE device_id = %s", (device_id,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def registered(conn: psycopg.AsyncConnection, scope: Scope, value: str) -> bool:
    """Whether the device, address or building exists in the registry."""
    table, column = {
        "device": ("devices", "device_id"),
        "address": ("addresses", "address_id"),
        "building": ("buildings", "building_id"),
    }[scope]
    cur = await conn.execute(f"SELECT 1 FROM {table} WHERE {column} = %s", (value,))
    row = await cur.fetchone()
    return row is not None


async def add_silence(conn: psycopg.AsyncConnection, silence: NewSilence) -> SilenceRow:
    """Store a new silence."""
    async with conn.transaction(), conn.cursor(row_factory=class_row(SilenceRow)) as cur:
        await cur.execute(
            "INSERT INTO silences (scope, value, rules, starts_at, ends_at, author, reason)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_SILENCE_COLUMNS}",
            (
                silence.scope,
                silence.value,
                list(silence.rules),
                silence.starts_at,
                silence.ends_at,
                silence.author,
                silence.reason,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def list_silences(conn: psycopg.AsyncConnection, include_past: bool) -> list[SilenceRow]:
    """Active and pending silences; with ``include_past`` also ended and expired ones."""
    where = "true" if include_past else "expired_at IS NULL AND ends_at > now()"
    async with conn.cursor(row_factory=class_row(SilenceRow)) as cur:
        await cur.execute(
            f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE {where} ORDER BY starts_at, id"
        )
        return await cur.fetchall()


async def expire_silence(conn: psycopg.AsyncConnection, silence_id: int, by: str) -> SilenceRow:
    """End a silence now; Refused when there is none or it was already expired."""
    async with conn.transaction(), conn.cursor(row_factory=class_row(SilenceRow)) as cur:
        await cur.execute(
            "UPDATE silences SET expired_at = now(), expired_by = %s"
            f" WHERE id = %s AND expired_at IS NULL RETURNING {_SILENCE_COLUMNS}",
            (by, silence_id),
        )
        row = await cur.fetchone()
        if row is not None:
            return row
        await cur.execute(f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = %s", (silence_id,))
        found = await cur.fetchone()
    if found is None:
        raise Refused(f"no silence {silence_id}", silence_id)
    when = found.expired_at.isoformat(timespec="seconds") if found.expired_at else "?"
    raise Refused(
        f"silence {silence_id} was already expired (by {found.expired_by or '-'} at {when})",
        silence_id,
    )
