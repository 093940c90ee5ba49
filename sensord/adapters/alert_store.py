"""Applies the rule engine's effects inside the transaction that stores the readings.

One transaction holds a batch's readings, the alert changes they caused and
the rule states they moved, so after a crash the three agree: what the broker
redelivers is a duplicate of stored readings, and the engine (whose per-device
recent readings are restored from the readings table) ignores it.

Times: ``first_seen``/``last_seen`` are device time (display); ``cleared_at``
and ``recurred_at`` are server receive times, the clock telemetry verification
holds on (docs/rules.md, "Time").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta

from psycopg import AsyncCursor

from sensord.core.rules.engine import DUPLICATE_WINDOW, Effect, Evaluation, Key
from sensord.core.rules.state import Outcome, Phase, RuleState

_OPEN = "state <> 'cleared'"


async def apply_evaluation(cur: AsyncCursor[tuple[object, ...]], evaluation: Evaluation) -> int:
    """Write alert effects and changed rule states; return how many alerts fired or reopened."""
    opened = 0
    for effect in _coalesced(evaluation.effects):
        if effect.outcome in (Outcome.FIRED, Outcome.REOPENED):
            opened += await _open(cur, effect)
        elif effect.outcome is Outcome.UPDATED:
            await cur.execute(
                f"UPDATE alerts SET last_seen = greatest(last_seen, %s), updated_at = now()"
                f" WHERE rule = %s AND subject = %s AND {_OPEN}",
                (effect.ts, effect.rule.name, effect.subject),
            )
        elif effect.outcome is Outcome.CLEARED:
            await _clear(cur, effect)
    for (rule, subject), at in evaluation.recurring.items():
        # The newest cleared alert of the pair: its clear is contradicted.
        await cur.execute(
            "UPDATE alerts SET recurred_at = greatest(recurred_at, %s), updated_at = now()"
            " WHERE id = (SELECT id FROM alerts WHERE rule = %s AND subject = %s"
            " AND state = 'cleared' ORDER BY cleared_at DESC LIMIT 1)",
            (at, rule, subject),
        )
    if evaluation.changed:
        await _save_states(cur, evaluation.changed.items())
    return opened


def _coalesced(effects: list[Effect]) -> list[Effect]:
    # Many readings of one firing alert in a batch need one last_seen update.
    last_update: dict[tuple[str, str], int] = {}
    for index, effect in enumerate(effects):
        if effect.outcome is Outcome.UPDATED:
            last_update[(effect.rule.name, effect.subject)] = index
    keep = set(last_update.values())
    return [e for i, e in enumerate(effects) if e.outcome is not Outcome.UPDATED or i in keep]


async def _open(cur: AsyncCursor[tuple[object, ...]], effect: Effect) -> int:
    rule = effect.rule
    # An alert already open for the pair (another instance, a manual step): one alert.
    await cur.execute(
        f"UPDATE alerts SET count = count + 1, last_seen = greatest(last_seen, %s),"
        f" severity = %s, updated_at = now() WHERE rule = %s AND subject = %s AND {_OPEN}"
        " RETURNING id",
        (effect.ts, effect.severity, rule.name, effect.subject),
    )
    row = await cur.fetchone()
    if row is not None:
        await _event(cur, row[0], "updated", f"{effect.outcome.value} while open")
        return 0
    silence = await _silence(cur, effect)
    if effect.outcome is Outcome.REOPENED:
        await cur.execute(
            "UPDATE alerts SET state = 'firing', cleared_at = NULL, clear_reason = NULL,"
            " acknowledged_at = NULL, acknowledged_by = NULL, silenced_by = %s,"
            " count = count + 1, last_seen = %s, severity = %s, updated_at = now(),"
            " clear_device_id = NULL, clear_ts = NULL, clear_seq = NULL, recurred_at = NULL,"
            " episode = episode + 1"  # a new firing episode: the dispatcher reopens its order
            " WHERE id = (SELECT id FROM alerts WHERE rule = %s AND subject = %s"
            " AND state = 'cleared' AND cleared_at >= %s ORDER BY cleared_at DESC LIMIT 1)"
            " RETURNING id",
            (
                silence,
                effect.ts,
                effect.severity,
                rule.name,
                effect.subject,
                effect.at - timedelta(seconds=rule.cooldown_s),  # cleared_at: server time
            ),
        )
        row = await cur.fetchone()
        if row is not None:
            await _event(cur, row[0], "reopened", "")
            if silence is not None:
                await _event(cur, row[0], "silenced", f"silence {silence}")
            return 1
    await cur.execute(
        "INSERT INTO alerts (rule, category, severity, safety, subject, device_id, address_id,"
        " first_seen, last_seen, silenced_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (rule, subject) WHERE {_OPEN} DO UPDATE SET count = alerts.count + 1,"
        " last_seen = greatest(alerts.last_seen, EXCLUDED.last_seen), updated_at = now()"
        " RETURNING id, (xmax = 0)",
        (
            rule.name,
            rule.category,
            effect.severity,
            rule.safety,
            effect.subject,
            effect.device_id,
            effect.address_id,
            effect.ts,
            effect.ts,
            silence,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    alert_id, inserted = row
    await _event(cur, alert_id, "fired" if inserted else "updated", "")
    if silence is not None and inserted:
        await _event(cur, alert_id, "silenced", f"silence {silence}")
    return 1 if inserted else 0


async def _silence(cur: AsyncCursor[tuple[object, ...]], effect: Effect) -> int | None:
    if effect.rule.safety:
        return None  # a silence never mutes a safety rule
    await cur.execute(
        "SELECT id FROM silences WHERE expired_at IS NULL AND starts_at <= %s AND ends_at > %s"
        " AND (cardinality(rules) = 0 OR %s = ANY(rules))"  # no rules named: every non-safety
        " AND ((scope = 'device' AND value = %s) OR (scope = 'address' AND value = %s)"
        " OR (scope = 'kind' AND value = (SELECT kind FROM devices WHERE device_id = %s))"
        " OR (scope = 'building' AND value = (SELECT building_id FROM addresses"
        " WHERE address_id = %s))) ORDER BY id LIMIT 1",
        (
            effect.ts,
            effect.ts,
            effect.rule.name,
            effect.device_id,
            effect.address_id,
            effect.device_id,
            effect.address_id,
        ),
    )
    row = await cur.fetchone()
    return int(str(row[0])) if row else None


async def _clear(cur: AsyncCursor[tuple[object, ...]], effect: Effect) -> None:
    # The clearing reading (device, ts, seq) is the evidence telemetry verification
    # requires; a clear no reading caused (the registry's) names none.
    by_reading = effect.seq is not None
    await cur.execute(
        "UPDATE alerts SET state = 'cleared', cleared_at = %s, clear_reason = 'condition cleared',"
        " clear_device_id = %s, clear_ts = %s, clear_seq = %s, recurred_at = NULL,"
        f" updated_at = now() WHERE rule = %s AND subject = %s AND {_OPEN} RETURNING id",
        (
            effect.at,
            effect.device_id if by_reading else None,
            effect.ts if by_reading else None,
            effect.seq,
            effect.rule.name,
            effect.subject,
        ),
    )
    row = await cur.fetchone()
    if row is not None:
        await _event(cur, row[0], "cleared", "condition cleared")


async def _event(
    cur: AsyncCursor[tuple[object, ...]], alert_id: object, event: str, detail: str
) -> None:
    await cur.execute(
        "INSERT INTO alert_events (alert_id, event, detail) VALUES (%s, %s, %s)",
        (alert_id, event, detail),
    )


async def _save_states(
    cur: AsyncCursor[tuple[object, ...]], changed: Iterable[tuple[Key, RuleState]]
) -> None:
    await cur.executemany(
        "INSERT INTO rule_state (rule, subject, state) VALUES (%s, %s, %s)"
        " ON CONFLICT (rule, subject) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
        [(rule, subject, json.dumps(encode_state(state))) for (rule, subject), state in changed],
    )


def encode_state(state: RuleState) -> dict[str, str | None]:
    """A rule state as JSON-able data (last_ts is restored from the readings instead)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "phase": state.phase.value,
        "pending_since": iso(state.pending_since),
        "fired_at": iso(state.fired_at),
        "clearing_since": iso(state.clearing_since),
        "cleared_at": iso(state.cleared_at),
    }


def decode_state(data: dict[str, str | None]) -> RuleState:
    """The inverse of encode_state."""

    def at(key: str) -> datetime | None:
        value = data.get(key)
        return datetime.fromisoformat(value) if value else None

    return RuleState(
        Phase(str(data["phase"])),
        None,
        at("pending_since"),
        at("fired_at"),
        at("clearing_since"),
        at("cleared_at"),
    )


async def load_states(cur: AsyncCursor[tuple[object, ...]]) -> dict[Key, RuleState]:
    """Every persisted rule state."""
    await cur.execute("SELECT rule, subject, state FROM rule_state")
    return {(str(r), str(s)): decode_state(state) for r, s, state in await cur.fetchall()}  # type: ignore[arg-type]


async def load_last_seen(
    cur: AsyncCursor[tuple[object, ...]], horizon: timedelta
) -> tuple[dict[tuple[str, str], datetime], dict[str, datetime]]:
    """Per device within ``horizon``: the newest device time stored (what is late news)
    and the last time sensord received something (absence rules)."""
    await cur.execute(
        "SELECT device_id, kind, max(ts), max(received_at) FROM readings"
        " WHERE ts > now() - %s GROUP BY device_id, kind",
        (horizon,),
    )
    last_ts: dict[tuple[str, str], datetime] = {}
    last_received: dict[str, datetime] = {}
    for device, kind, ts, received in await cur.fetchall():
        last_ts[(str(device), str(kind))] = ts  # type: ignore[assignment]
        seen = last_received.get(str(device))
        if seen is None or received > seen:  # type: ignore[operator]
            last_received[str(device)] = received  # type: ignore[assignment]
    return last_ts, last_received


async def load_count_history(
    cur: AsyncCursor[tuple[object, ...]], categories: Iterable[str], horizon: timedelta
) -> list[tuple[str, str, str | None, datetime]]:
    """Alerts of counted categories opened within ``horizon``: the count rules' windows."""
    await cur.execute(
        "SELECT category, device_id, address_id, first_seen FROM alerts"
        " WHERE category = ANY(%s) AND first_seen > now() - %s AND device_id IS NOT NULL",
        (list(categories), horizon),
    )
    return [
        (str(c), str(d), None if a is None else str(a), t)  # type: ignore[misc]
        for c, d, a, t in await cur.fetchall()
    ]


async def load_recent(
    cur: AsyncCursor[tuple[object, ...]], horizon: timedelta
) -> list[tuple[str, datetime, int]]:
    """(device, ts, seq) of the readings within DUPLICATE_WINDOW of each device's newest
    device time: what the engine recognises as a redelivery."""
    await cur.execute(
        "WITH newest AS (SELECT device_id, max(ts) AS ts FROM readings"
        " WHERE ts > now() - %s GROUP BY device_id)"
        " SELECT r.device_id, r.ts, r.seq FROM newest n JOIN readings r"
        " ON r.device_id = n.device_id AND r.ts > n.ts - %s AND r.ts <= n.ts",
        (horizon, DUPLICATE_WINDOW),
    )
    return [(str(d), t, int(str(s))) for d, t, s in await cur.fetchall()]  # type: ignore[misc]
