"""Inbound order commands (``<prefix>/<street>/orders/<order_id>/events/<principal>``):
parsing and authorisation (pure).

The last topic segment is the sender's broker username (``staff.<id>`` or ``app.<org>``),
and the generated ACL lets each principal write only its own segment
(``sensord broker config``): it is the authenticated actor. ``by`` must be that member of
staff (a staff principal), or a member of the app's own organisation (an app principal);
anything else is refused and counted. Then sensord authorises ``by`` against the order:
the owner's staff work the order (ack, arrive, resolve); cancelling needs the
owner or a supervisor (the city-operations centre, the district office);
verifying and reopening is open to every party of the order and the
supervisors (the machine then refuses a verifier in the
resolver's own role). Cancelling a safety-category order (a fire, an entrapment, an
e-bike charging indoors) needs the city-operations centre.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sensord.core.orders.machine import Event
from sensord.errors import SensordError

COMMAND_EVENTS = ("ack", "arrive", "resolve", "verify", "cancel", "reopen")
SUPERVISORS = frozenset({"ops_centre", "district_office"})
_OWNER_ONLY = frozenset({Event.ACK, Event.ARRIVE, Event.RESOLVE})
_PRINTABLE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # no NUL or control characters
_TOPIC = re.compile(
    r"(?P<street>[A-Za-z0-9_-]{1,64})/orders/(?P<order>[0-9]{1,18})/events"
    r"/(?P<principal>(?:staff|app)\.[A-Za-z0-9_.-]{1,64})"
)
# Orders raised by a safety rule (`safety = true` in its rule file, stored on the alert) are
# cancelled only by the ops centre: a false alarm is its call, not the owner's.
CANCEL_SAFETY = frozenset({"ops_centre"})
# Why an actor was refused: the label values of sensord_order_command_refusals_total.
REFUSALS = ("by_not_sender", "outside_app_org", "safety_cancel", "unknown_staff")


class CommandRejected(SensordError):
    """A command that is malformed or not allowed; the reply carries the message."""

    def __init__(self, code: str, message: str, refusal: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.refusal = refusal  # one of REFUSALS when the actor was refused
        self.request_id = ""  # as far as it could be read


class Command(BaseModel):
    """One inbound command (docs/orders.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event: Literal["ack", "arrive", "resolve", "verify", "cancel", "reopen"]
    by: Annotated[str, Field(min_length=1, max_length=64, pattern=_PRINTABLE)]
    note: Annotated[str, Field(max_length=500, pattern=_PRINTABLE)] = ""
    request_id: Annotated[str, Field(max_length=64, pattern=_PRINTABLE)] = ""


@dataclass(frozen=True, slots=True)
class CommandTopic:
    """The street and order a command topic names, and who sent it (a broker username)."""

    street: str
    order_id: int
    principal: str


@dataclass(frozen=True, slots=True)
class Actor:
    """A member of staff as the registry has them."""

    staff_id: str
    org_id: str
    org_type: str
    role: str


def command_subscription(prefix: str) -> str:
    """The topic filter of every street's order commands, from every sender."""
    return f"{prefix}/+/orders/+/events/+"


def parse_command_topic(topic: str, prefix: str) -> CommandTopic | None:
    """The street and order id of a command topic; None for any other topic."""
    if not topic.startswith(prefix + "/"):
        return None
    found = _TOPIC.fullmatch(topic[len(prefix) + 1 :])
    if found is None:
        return None
    return CommandTopic(found["street"], int(found["order"]), found["principal"])


def parse_command(payload: bytes) -> Command:
    """Decode a command; raise CommandRejected('invalid', …) naming what is wrong.

    The rejection carries the command's ``request_id`` when one can be read,
    so that the sender can match the reply to what it sent.
    """
    try:
        document = json.loads(payload)
    except RecursionError:
        raise CommandRejected("invalid", "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandRejected("invalid", f"not JSON: {exc}") from None
    try:
        return Command.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
        )
        rejected = CommandRejected("invalid", problems)
        rejected.request_id = _request_id(document)
        raise rejected from None


def _request_id(document: object) -> str:
    value = document.get("request_id") if isinstance(document, dict) else None
    valid = isinstance(value, str) and len(value) <= 64 and re.fullmatch(_PRINTABLE, value)
    return value if valid and isinstance(value, str) else ""


def check_sender(principal: str, by: str, actor: Actor | None) -> None:
    """Refuse a ``by`` the authenticated ``principal`` may not speak for.

    A member of staff speaks only for themselves; an organisation's app only for that
    organisation's staff. CommandRejected('unauthorised', …, refusal) otherwise.
    """
    kind, _, principal_id = principal.partition(".")
    if kind == "staff" and by != principal_id:
        raise CommandRejected(
            "unauthorised", f"sent by {principal}: `by` must be {principal_id}", "by_not_sender"
        )
    if actor is None:
        raise CommandRejected(
            "unauthorised", "`by` is not a member of staff in the registry", "unknown_staff"
        )
    if kind == "app" and actor.org_id != principal_id:
        raise CommandRejected(
            "unauthorised",
            f"sent by {principal}: {actor.staff_id} is not staff of {principal_id}",
            "outside_app_org",
        )
    if kind not in ("staff", "app"):
        raise CommandRejected("unauthorised", f"{principal} may not send commands", "by_not_sender")


def authorise(
    event: Event,
    actor: Actor | None,
    owner_org: str | None,
    parties: Collection[str],
    category: str = "",
    safety: bool = False,
) -> None:
    """Raise CommandRejected('unauthorised', …) unless ``actor`` may send ``event``;
    ``safety``: the order's alert was raised by a safety rule."""
    if actor is None:
        raise CommandRejected("unauthorised", "`by` is not a member of staff in the registry")
    if (
        event is Event.CANCEL
        and safety
        and actor.org_type not in CANCEL_SAFETY
    ):
        raise CommandRejected(
            "unauthorised",
            f"a {category} order is cancelled only by the city-operations centre",
            "safety_cancel",
        )
    supervisor = actor.org_type in SUPERVISORS
    if event in _OWNER_ONLY:
        allowed = actor.org_id == owner_org
    elif event is Event.CANCEL:
        allowed = actor.org_id == owner_org or supervisor
    else:
        allowed = actor.org_id == owner_org or actor.org_id in parties or supervisor
    if not allowed:
        raise CommandRejected(
            "unauthorised",
            f"{actor.staff_id} ({actor.org_id}) may not {event.value} this order",
        )
