"""Streaming evaluation of state rules over batches of readings (pure).

The engine holds every (rule, subject) state in memory and turns a batch of
readings, in arrival order, into effects: alerts to fire, reopen, update or
clear, and the states that changed (to persist in the same transaction as
the readings, so a restart resumes exactly where the stored data left off).

Every reading is evaluated in receive order except a redelivery (the same
device, ``ts`` and ``seq`` as one already evaluated: the ``readings`` table's
own duplicate key); device time never hides a reading (docs/rules.md, "Time").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sensord.core.messages import READING_COLUMNS, Reading
from sensord.core.rules.model import Rule, RuleSet, higher_severity
from sensord.core.rules.state import Outcome, Phase, RuleState, step

Key = tuple[str, str]  # (rule name, subject)
_VALUE_COLUMNS = READING_COLUMNS[5:-1]

# How far behind a device's newest device time a reading is still evaluated: within
# it a redelivery is recognised by its key (restored after a restart,
# alert_store.load_recent); older readings cannot be told from a replay and are
# stored but not evaluated. Far wider than the future tolerance (ingest.max_future_s
# <= 600 s, default 60 s): a forged future reading cannot make a reading with an
# honest clock this old, so no honest alarm is ever skipped (docs/rules.md, "Time").
DUPLICATE_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Effect:
    """One alert change to apply."""

    outcome: Outcome
    rule: Rule
    subject: str
    device_id: str
    address_id: str | None
    ts: datetime  # device time of the reading (first_seen, last_seen: display)
    severity: str
    # Server time of the change: the reading's receipt, or the timer's now.
    received_at: datetime | None = None
    seq: int | None = None  # with device_id and ts: the reading that caused it, if one did

    @property
    def at(self) -> datetime:
        """Server time of the change (cleared_at, the cooldown)."""
        return self.ts if self.received_at is None else self.received_at


@dataclass(slots=True)
class Evaluation:
    """What one batch did: alert effects in order, and the states to persist."""

    effects: list[Effect] = field(default_factory=list)
    changed: dict[Key, RuleState] = field(default_factory=dict)
    # Pairs whose cleared alert saw its condition hold again (not yet long
    # enough to reopen): the newest such receive time. Telemetry must not
    # verify a clear contradicted like that.
    recurring: dict[Key, datetime] = field(default_factory=dict)


def firmware_version(fw: str) -> tuple[int, ...] | None:
    """``"2.4.1"`` -> (2, 4, 1) for conditions like ``fw_version < (2, 4, 0)``; else None."""
    parts = fw.strip().lstrip("vV").split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def subject_of(device_id: str) -> str:
    """The subject of device-scoped rules."""
    return f"device:{device_id}"


class RuleEngine:
    """State rules over readings. Not thread-safe: one evaluator task owns it."""

    def __init__(
        self,
        rules: RuleSet,
        states: Mapping[Key, RuleState] | None = None,
        last_ts: Mapping[tuple[str, str], datetime] | None = None,
        *,
        started_at: datetime | None = None,
        last_received: Mapping[str, datetime] | None = None,
        history: Iterable[tuple[str, str, str | None, datetime]] = (),
        recent: Iterable[tuple[str, datetime, int]] = (),
        device_clock: bool = False,
    ) -> None:
        self._rules = rules
        # The windows run on receive time; device time only for accelerated
        # simulations (rules.clock = "device"), where ts runs faster than the server.
        self._device_clock = device_clock
        self._by_kind: dict[str, tuple[Rule, ...]] = {}
        self._states: dict[Key, RuleState] = dict(states or {})
        # Per device: the newest device time already stored and evaluated. Used
        # for pairs with no state yet, so a redelivered reading is not new.
        # Keyed by (device, kind): a pair's guard is the newest of its rule's kinds, the
        # same whether the pair lives in memory or was restored after a restart.
        self._last_ts: dict[tuple[str, str], datetime] = dict(last_ts or {})
        # Per device: (ts, seq) of the readings evaluated within DUPLICATE_WINDOW
        # of its newest device time, to drop redeliveries (``recent`` restores it).
        self._recent: dict[str, set[tuple[datetime, int]]] = {}
        self._newest_ts: dict[str, datetime] = {}
        for (device_id, _kind), ts in self._last_ts.items():
            if (newest := self._newest_ts.get(device_id)) is None or ts > newest:
                self._newest_ts[device_id] = ts
        for device_id, ts, seq in recent:
            self._recent.setdefault(device_id, set()).add((ts, seq))
        # Absence rules run on the server clock: when sensord last received
        # something from each device. A device not heard of since before the
        # start counts from the start, so a restart raises no storm of offline
        # alerts and forgets no device.
        self._started_at = started_at
        self._last_received: dict[str, datetime] = dict(last_received or {})
        # Count rules: per (rule, subject), when the counted alerts fired.
        self._windows: dict[Key, list[datetime]] = {}
        for category, device_id, address_id, ts in history or ():
            for rule in self._count_rules(category):
                subject = _count_subject(rule, device_id, address_id)
                if subject is not None:
                    self._windows.setdefault((rule.name, subject), []).append(ts)

    @property
    def rules(self) -> RuleSet:
        """The rule set in force."""
        return self._rules

    def swap_rules(self, rules: RuleSet) -> None:
        """Use a new, already validated rule set; states of removed rules are forgotten."""
        names = {rule.name for rule in rules.rules}
        self._states = {key: s for key, s in self._states.items() if key[0] in names}
        self._rules = rules
        self._by_kind = {}

    def state(self, key: Key) -> RuleState | None:
        """The state of one (rule, subject) pair, if it has one."""
        return self._states.get(key)

    def evaluate(
        self,
        readings: Iterable[Reading],
        context: Callable[[str], Mapping[str, Any]],
    ) -> Evaluation:
        """Run the batch through the state rules; ``context(device_id)`` adds registry fields."""
        result = Evaluation()
        absence = self._absence_rules()
        for reading in readings:
            redelivered = self._redelivered(reading)
            # A broker's redelivery of a message already evaluated says nothing about the
            # device now; any other reading, however old its device time, was just sent.
            if absence and not redelivered:
                self._back_online(absence, reading, context, result)
            if redelivered or self._too_old(reading):
                continue
            rules = self._rules_for(reading.kind)
            if not rules:
                self._seen(reading)
                continue
            extra = context(reading.device_id)
            fields: dict[str, object] = dict(extra)
            fields.update(zip(_VALUE_COLUMNS, reading[5:-1], strict=True))
            if reading.fw is not None:
                fields["fw_version"] = firmware_version(reading.fw)
            subject = subject_of(reading.device_id)
            for rule in rules:
                self._apply(rule, subject, reading, fields, extra, result)
            self._seen(reading)
        self._count(result)
        return result

    def _apply(
        self,
        rule: Rule,
        subject: str,
        reading: Reading,
        fields: dict[str, object],
        extra: Mapping[str, Any],
        result: Evaluation,
    ) -> None:
        key = (rule.name, subject)
        before = self._states.get(key)
        if before is None:
            before = RuleState(last_ts=self._newest(reading.device_id, rule.kinds))
        elif before.last_ts is None:  # restored from the database, which keeps no last_ts
            before = replace(before, last_ts=self._newest(reading.device_id, rule.kinds))
        at = reading.ts if self._device_clock else reading.received_at
        after, outcome = step(rule, before, fields, reading.ts, at)
        if after is before:
            return
        self._states[key] = after
        if _durable(before) != _durable(after):
            result.changed[key] = after
        if (
            after.phase is Phase.CLEARED
            and after.pending_since is not None
            and rule.when is not None
            and rule.when.truth(fields) is True
        ):
            result.recurring[key] = reading.received_at
        if outcome is not Outcome.NONE:
            address = extra.get("address_id")
            result.effects.append(
                Effect(
                    outcome,
                    rule,
                    subject,
                    reading.device_id,
                    address if isinstance(address, str) else None,
                    reading.ts,
                    _severity(rule, fields),
                    reading.received_at,
                    reading.seq,
                )
            )

    def check_absence(
        self,
        now: datetime,
        devices: Mapping[str, tuple[str, int | None]],
        context: Callable[[str], Mapping[str, Any]],
    ) -> Evaluation:
        """Fire absence rules for silent devices; ``devices``: id -> (kind, heartbeat_s)."""
        result = Evaluation()
        for rule in self._absence_rules():
            assert rule.missed_heartbeats is not None
            for device_id, (kind, heartbeat_s) in devices.items():
                if not heartbeat_s or kind not in rule.kinds:
                    continue
                key = (rule.name, subject_of(device_id))
                state = self._states.get(key)
                if state is not None and state.phase is Phase.FIRING:
                    continue
                last = self._last_received.get(device_id, self._started_at)
                if last is None or now - last <= timedelta(
                    seconds=heartbeat_s * rule.missed_heartbeats
                ):
                    continue
                fired = RuleState(Phase.FIRING, None, None, now, None, None)
                self._record(result, rule, device_id, fired, Outcome.FIRED, now, context)
        return result

    def _back_online(
        self,
        rules: tuple[Rule, ...],
        reading: Reading,
        context: Callable[[str], Mapping[str, Any]],
        result: Evaluation,
    ) -> None:
        last = self._last_received.get(reading.device_id)
        if last is None or reading.received_at > last:
            self._last_received[reading.device_id] = reading.received_at
        subject = subject_of(reading.device_id)
        for rule in rules:
            key = (rule.name, subject)
            state = self._states.get(key)
            if state is None or state.phase is not Phase.FIRING:
                continue
            at = reading.received_at
            cleared = RuleState(Phase.CLEARED, None, None, state.fired_at, None, at)
            self._record(
                result, rule, reading.device_id, cleared, Outcome.CLEARED, at, context, reading
            )

    def check_inspections(
        self,
        now: datetime,
        due: Mapping[str, tuple[str, date | None]],
        context: Callable[[str], Mapping[str, Any]],
    ) -> Evaluation:
        """Inspection rules over the registry; ``due``: device -> (kind, next inspection date).

        Fires when the date is within the rule's horizon (or past); clears when
        the registry moves the date beyond it (the inspection was done).
        """
        result = Evaluation()
        today = now.date()
        for rule in self._rules.rules:
            if rule.type != "inspection":
                continue
            assert rule.within_days is not None
            horizon = today + timedelta(days=rule.within_days)
            for device_id, (kind, inspection_due) in due.items():
                if kind not in rule.kinds:
                    continue
                key = (rule.name, subject_of(device_id))
                state = self._states.get(key)
                firing = state is not None and state.phase is Phase.FIRING
                is_due = inspection_due is not None and inspection_due <= horizon
                if is_due == firing:
                    continue
                if is_due:
                    new, outcome = (
                        RuleState(Phase.FIRING, None, None, now, None, None),
                        Outcome.FIRED,
                    )
                else:
                    assert state is not None
                    new = RuleState(Phase.CLEARED, None, None, state.fired_at, None, now)
                    outcome = Outcome.CLEARED
                self._record(result, rule, device_id, new, outcome, now, context)
        return result

    def _record(
        self,
        result: Evaluation,
        rule: Rule,
        device_id: str,
        state: RuleState,
        outcome: Outcome,
        at: datetime,
        context: Callable[[str], Mapping[str, Any]],
        reading: Reading | None = None,
    ) -> None:
        """A timer-, registry- or arrival-driven transition: keep the state, persist it,
        emit the effect (naming ``reading`` when one caused it)."""
        key = (rule.name, subject_of(device_id))
        self._states[key] = result.changed[key] = state
        address = context(device_id).get("address_id")
        result.effects.append(
            Effect(
                outcome,
                rule,
                key[1],
                device_id,
                address if isinstance(address, str) else None,
                reading.ts if reading is not None else at,
                rule.severity,
                at,
                reading.seq if reading is not None else None,
            )
        )

    def _count(self, result: Evaluation) -> None:
        """Count rules: each counted alert that opens, at or over the threshold, fires one.

        A count rule's alert does not clear by itself; while it is open, more
        offences add to its count (the store merges a firing into an open alert).
        """
        for effect in list(result.effects):
            if effect.outcome is not Outcome.FIRED:
                continue
            for rule in self._count_rules(effect.rule.category):
                assert rule.window_s is not None and rule.threshold is not None
                subject = _count_subject(rule, effect.device_id, effect.address_id)
                if subject is None:
                    continue
                window = self._windows.setdefault((rule.name, subject), [])
                window.append(effect.ts)
                horizon = effect.ts - timedelta(seconds=rule.window_s)
                window[:] = [ts for ts in window if ts > horizon]
                if len(window) >= rule.threshold:
                    result.effects.append(
                        Effect(
                            Outcome.FIRED,
                            rule,
                            subject,
                            effect.device_id,
                            effect.address_id,
                            effect.ts,
                            rule.severity,
                        )
                    )

    def _count_rules(self, category: str) -> tuple[Rule, ...]:
        return tuple(
            r for r in self._rules.rules if r.type == "count" and r.counts_category == category
        )

    def _absence_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self._rules.rules if rule.type == "absence")

    def _rules_for(self, kind: str) -> tuple[Rule, ...]:
        rules = self._by_kind.get(kind)
        if rules is None:
            rules = self._by_kind[kind] = self._rules.for_kind(kind)
        return rules

    def _newest(self, device_id: str, kinds: Iterable[str]) -> datetime | None:
        seen = [t for k in kinds if (t := self._last_ts.get((device_id, k))) is not None]
        return max(seen, default=None)

    def _seen(self, reading: Reading) -> None:
        key = (reading.device_id, reading.kind)
        last = self._last_ts.get(key)
        if last is None or reading.ts > last:
            self._last_ts[key] = reading.ts
        device = reading.device_id
        newest = self._newest_ts.get(device)
        if newest is None or reading.ts > newest:
            newest = self._newest_ts[device] = reading.ts
        recent = self._recent.setdefault(device, set())
        if reading.ts > newest - DUPLICATE_WINDOW:
            recent.add((reading.ts, reading.seq))
        if len(recent) % 64 == 0:  # now and then, forget what fell out of the window
            horizon = newest - DUPLICATE_WINDOW
            recent.difference_update([k for k in recent if k[0] <= horizon])

    def _redelivered(self, reading: Reading) -> bool:
        """The key of a reading already evaluated (the broker sent it again)."""
        recent = self._recent.get(reading.device_id)
        return recent is not None and (reading.ts, reading.seq) in recent

    def _too_old(self, reading: Reading) -> bool:
        """More than DUPLICATE_WINDOW behind the device's newest device time: treated as a
        replay (no telling it from one). Decided on what a restart restores exactly, so
        restarts change nothing."""
        newest = self._newest_ts.get(reading.device_id)
        return newest is not None and reading.ts <= newest - DUPLICATE_WINDOW


def _count_subject(rule: Rule, device_id: str, address_id: str | None) -> str | None:
    # The snapshot carries places, not households: a dwelling's households are
    # counted together as its address (one household per dwelling in practice).
    if rule.subject == "device":
        return subject_of(device_id)
    return f"address:{address_id}" if address_id else None


def _durable(state: RuleState) -> tuple[object, ...]:
    """The part of a state worth persisting: everything but last_ts (restored from readings)."""
    return (
        state.phase,
        state.pending_since,
        state.fired_at,
        state.clearing_since,
        state.cleared_at,
    )


def _severity(rule: Rule, fields: Mapping[str, object]) -> str:
    severity: str = rule.severity
    for escalation in rule.escalate:
        if escalation.when(fields):
            severity = higher_severity(severity, escalation.severity)
    return severity
