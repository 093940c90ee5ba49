"""``sensord silence add|list|expire``: maintenance windows by hand.

Arguments are parsed and checked here (times, durations, the rules a silence
names, which may never be safety rules); the SQL is
``adapters/alert_queries``. Exit status: 0 done; 1 refused (unknown id, a
silence not in a state the command applies to, a safety or unknown rule, a
device or place not in the registry) or the database failed; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sensord import exits
from sensord.cli.common import (
    ArgumentInvalid,
    as_json,
    connect,
    guarded,
    nonblank,
    print_json,
    table,
    when,
)
from sensord.config import Settings
from sensord.core.registry.vocabulary import DEVICE_KINDS

if TYPE_CHECKING:
    from sensord.adapters.alert_queries import NewSilence, Scope, SilenceRow
    from sensord.core.rules.model import RuleSet

NAME = "silence"
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
Handler = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def register(subparsers: Any) -> None:
    """Add ``silence`` and its subcommands to the ``sensord`` subparsers."""
    silence = subparsers.add_parser(
        NAME, help="maintenance windows: mute non-safety alerts of a device or place"
    )
    sub = silence.add_subparsers(dest="silence_command", required=True)
    add = sub.add_parser(
        "add",
        help="mute non-safety alerts of one scope for a time (safety rules are never muted)",
    )
    scope = add.add_mutually_exclusive_group(required=True)
    scope.add_argument("--device", metavar="ID")
    scope.add_argument("--address", metavar="ID")
    scope.add_argument("--building", metavar="ID")
    scope.add_argument("--kind", choices=DEVICE_KINDS, help="every device of this kind")
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", metavar="TIME", help="ISO 8601 with a UTC offset")
    until.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 2h, 1d, 1h30m")
    add.add_argument("--from", dest="start", metavar="TIME", help="default: now")
    add.add_argument("--author", required=True, type=nonblank("--author"))
    add.add_argument("--reason", required=True, type=nonblank("--reason"))
    add.add_argument(
        "--rule",
        dest="rules",
        metavar="NAME",
        action="append",
        default=[],
        help="mute only this rule (repeatable; never a safety rule); default: all non-safety",
    )
    listing = sub.add_parser("list", help="active and pending silences")
    listing.add_argument("--all", action="store_true", help="also ended and expired ones")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    expire = sub.add_parser("expire", help="end a silence now")
    expire.add_argument("silence_id", metavar="ID", type=int)
    expire.add_argument("--by", required=True, type=nonblank("--by"))


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen ``silence`` subcommand; the process exit status."""
    from sensord.adapters.alert_queries import Refused

    handlers: dict[str, Handler] = {"add": _add, "list": _list, "expire": _expire}
    handler = handlers[args.silence_command]
    return guarded(
        f"sensord silence {args.silence_command}",
        lambda: asyncio.run(handler(settings, args)),
        (Refused,),
    )


async def _add(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.alert_queries import Refused, add_silence, device_kind, registered

    silence = new_silence(args, datetime.now(UTC))
    rules = _rules_or_none(settings, required=bool(silence.rules))
    if rules is not None:
        check_rules(silence.rules, rules)  # unknown or safety rules: refused before any I/O
    async with await connect(settings, "sensord-alerts") as conn:
        kind: str | None = silence.value if silence.scope == "kind" else None
        if silence.scope == "device":
            kind = await device_kind(conn, silence.value)
            if kind is None:
                raise Refused(f"no device {silence.value!r} in the registry")
        elif silence.scope != "kind" and not await registered(conn, silence.scope, silence.value):
            raise Refused(f"no {silence.scope} {silence.value!r} in the registry")
        if rules is not None and kind is not None:
            check_applicable(silence.rules, rules, kind)
        created = await add_silence(conn, silence)
    print(
        f"silence {created.id} created: {created.scope} {created.value}, "
        f"{when(created.starts_at)} until {when(created.ends_at)}"
    )
    print(mutes(created.rules, rules))
    return exits.OK


def new_silence(args: argparse.Namespace, now: datetime) -> NewSilence:
    """The silence the arguments describe; ArgumentInvalid when they do not make sense."""
    from sensord.adapters.alert_queries import NewSilence

    scopes: tuple[Scope, ...] = ("device", "address", "building", "kind")
    scope = next(name for name in scopes if getattr(args, name) is not None)
    value: str = getattr(args, scope)
    if not value.strip():
        raise ArgumentInvalid(f"--{scope} must not be empty")
    starts = parse_time(args.start, now) if args.start else now
    try:
        ends = parse_time(args.until, now) if args.until else starts + parse_duration(args.duration)
    except OverflowError:
        raise ArgumentInvalid(f"--for {args.duration}: too long") from None
    if ends <= now:
        raise ArgumentInvalid(f"the silence would already be over ({when(ends)} is past)")
    if ends <= starts:
        raise ArgumentInvalid(
            f"the silence must end after it starts ({when(ends)} is not after {when(starts)})"
        )
    return NewSilence(
        scope,
        value.strip(),
        starts,
        ends,
        args.author,
        args.reason,
        tuple(dict.fromkeys(args.rules)),
    )


def parse_time(text: str, now: datetime) -> datetime:
    """``now`` or an ISO 8601 time with a UTC offset (a bare local time is ambiguous)."""
    if text.strip() == "now":
        return now
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ArgumentInvalid(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-11-26T18:00+08:00"
        ) from None
    if value.tzinfo is None:
        raise ArgumentInvalid(f"{text!r} has no UTC offset; write e.g. {text}+08:00 or {text}Z")
    return value


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``: a positive duration."""
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        raise ArgumentInvalid(f"{text!r} is not a duration, e.g. 30m, 2h, 1d or 1h30m")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    try:
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise ArgumentInvalid(f"{text!r}: too long") from None
    if duration <= timedelta(0):
        raise ArgumentInvalid(f"{text!r}: a silence lasts longer than nothing")
    return duration


def check_rules(names: Sequence[str], rules: RuleSet) -> None:
    """Refuse rule names that are unknown or name a safety rule."""
    from sensord.adapters.alert_queries import Refused

    by_name = {rule.name: rule for rule in rules.rules}
    for name in names:
        rule = by_name.get(name)
        if rule is None:
            raise Refused(f"no rule {name!r}; rules: {', '.join(sorted(by_name))}")
        if rule.safety:
            raise Refused(
                f"rule {name!r} is a safety rule: silences cannot mute safety rules "
                f"(safety rules: {', '.join(_safety_names(rules))})",
            )


def check_applicable(names: Sequence[str], rules: RuleSet, kind: str) -> None:
    """Refuse rules that never see a device of this kind (every device sends heartbeats)."""
    from sensord.adapters.alert_queries import Refused

    kinds = {kind, "heartbeat"}
    by_name = {rule.name: rule for rule in rules.rules}
    for name in names:
        if not kinds & set(by_name[name].kinds):
            raise Refused(
                f"rule {name!r} watches {', '.join(by_name[name].kinds)}, never {kind}: "
                "the silence would mute nothing",
            )


def mutes(names: Sequence[str], rules: RuleSet | None) -> str:
    """What a silence mutes, in words."""
    if names:
        return f"mutes only: {', '.join(names)}"
    safety = f" ({', '.join(_safety_names(rules))})" if rules is not None else ""
    return f"mutes non-safety rules only; safety rules{safety} are never muted"


def _safety_names(rules: RuleSet | None) -> list[str]:
    return [rule.name for rule in rules.rules if rule.safety] if rules else []


def _rules_or_none(settings: Settings, *, required: bool) -> RuleSet | None:
    """The configured rule set; when it cannot be loaded, refuse if ``required``."""
    from sensord.adapters.alert_queries import Refused
    from sensord.adapters.rule_files import load_rules
    from sensord.errors import RuleError
    from sensord.paths import rules_directory

    directory = rules_directory(settings)
    try:
        return load_rules(directory)
    except (RuleError, OSError) as exc:
        if required:
            raise Refused(
                f"cannot check the named rules: the rules in {directory} do not load: {exc}"
            ) from None
        return None


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.alert_queries import list_silences

    async with await connect(settings, "sensord-alerts") as conn:
        silences = await list_silences(conn, args.all)
    if args.json:
        print_json([as_json(s) for s in silences])
    elif not silences:
        print("no silences" if args.all else "no active or pending silences")
    else:
        print(silence_table(silences))
    return exits.OK


async def _expire(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.alert_queries import expire_silence

    async with await connect(settings, "sensord-alerts") as conn:
        silence = await expire_silence(conn, args.silence_id, args.by)
    print(f"silence {silence.id} ({silence.scope} {silence.value}) expired by {args.by}")
    return exits.OK


def silence_table(silences: Sequence[SilenceRow]) -> str:
    """Silences as an aligned table for a terminal."""
    rows = [
        [
            str(s.id),
            s.status,
            f"{s.scope} {s.value}",
            ",".join(s.rules) or "non-safety",
            when(s.starts_at),
            when(s.ends_at),
            s.author,
            s.reason,
        ]
        for s in silences
    ]
    headers = ["ID", "STATUS", "SCOPE", "RULES", "FROM", "UNTIL", "AUTHOR", "REASON"]
    return table(headers, rows, right={0})
