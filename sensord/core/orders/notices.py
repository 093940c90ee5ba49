"""Notification messages for work-order changes, minimised per recipient (pure).

One message per recipient organisation and channel, with a deterministic
``message_id`` (the outbox's idempotency key): a receiver that sees the same
id twice (a crash between delivery and the outbox commit) drops the copy.

Personal data: what each recipient is told follows the disclosure policy
(``core/privacy.DISCLOSURE``; docs/security.md, "Disclosure"): residents'
names and phones in full only to the roles that call or visit them (the grid
worker, the residents' committee, the ops centre), masked or not at all to the
others; residents' tags only to those three; a home's floor, flat and the ids
that lead to it only to roles that must go to its door. A recipient whose
organisation did not resolve (the ``unrouted`` topic) is told the least.
Contacts are only attached for a dwelling's own residents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sensord.core.context import DeviceContext
from sensord.core.privacy import DISCLOSURE, at_least, disclosure_for, mask_name, mask_phone

# The roles told residents' names and phones in full (the policy says which).
CONTACT_ROLES = frozenset(role for role, rule in DISCLOSURE.items() if rule.contacts == "full")
MESSAGE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who a message is for, and why."""

    role: str
    org_id: str | None
    staff_id: str | None
    reason: str  # owner, notified, previous_owner, requester


@dataclass(frozen=True, slots=True)
class Contact:
    """A resident of the place, as the registry has them."""

    name: str
    phone: str | None
    tags: tuple[str, ...]


def dispatch_topic(prefix: str, street: str | None, org_id: str | None) -> str:
    """``<prefix>/<street>/dispatch/<org_id>``; an unresolved organisation reads ``unrouted``."""
    return f"{prefix}/{street or 'unknown'}/dispatch/{org_id or 'unrouted'}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One way a recipient is told: the channel and where on it."""

    channel: str  # mqtt, webhook
    destination: str  # an MQTT topic, or the organisation whose webhook is called


def deliveries(
    recipient: Recipient, prefix: str, street: str | None, webhook_orgs: frozenset[str]
) -> tuple[Delivery, ...]:
    """Every recipient is told over MQTT; an organisation with a webhook over it too."""
    mqtt = Delivery("mqtt", dispatch_topic(prefix, street, recipient.org_id))
    if recipient.org_id in webhook_orgs:
        return (mqtt, Delivery("webhook", str(recipient.org_id)))
    return (mqtt,)


def is_notification(topic: str, prefix: str) -> bool:
    """Whether ``topic`` is a dispatch topic (``<prefix>/<street>/dispatch/<org_id>``).

    It also matches the readings' ``<prefix>/+/+/+``: the broker hands sensord
    its own notifications back, and they are neither readings nor dead letters.
    """
    parts = topic.split("/")
    return (
        len(parts) == prefix.count("/") + 4
        and parts[-2] == "dispatch"
        and topic.startswith(prefix + "/")
    )


def reply_topic(prefix: str, street: str | None, order_id: int | str) -> str:
    """Where answers to inbound commands go: ``<prefix>/<street>/orders/<id>/replies``."""
    return f"{prefix}/{street or 'unknown'}/orders/{order_id}/replies"


def message_id(order_id: int, event_id: int, recipient: Recipient, channel: str) -> str:
    """The idempotency key of one message: stable across retries and restarts."""
    return f"o{order_id}-e{event_id}-{recipient.org_id or recipient.role}-{channel}"


def contacts_for(recipient: Recipient, contacts: Sequence[Contact]) -> list[dict[str, Any]]:
    """The residents' contacts as this recipient may see them."""
    rule = disclosure_for(recipient.role, recipient.org_id)
    if rule.contacts == "none":
        return []
    full = rule.contacts == "full"
    return [
        {
            "name": c.name if full else mask_name(c.name),
            "phone": (c.phone if full else mask_phone(c.phone)) if c.phone else None,
            "tags": list(c.tags) if rule.tags else [],
        }
        for c in contacts
    ]


def order_for(recipient: Recipient, order: Mapping[str, Any]) -> dict[str, Any]:
    """The order as this recipient may see it: what the policy withholds is ``None``.

    A shared place (kitchen, stairwell, elevator …) names no one's home and is
    given in full; a dwelling's floor, its label (the flat) and the address and
    device ids (which lead back to the flat through the registry) only as
    precisely as the recipient's role needs.
    """
    view = dict(order)
    place = order.get("place")
    if not place:  # a device the registry does not place: nothing to withhold
        return view
    rule = disclosure_for(recipient.role, recipient.org_id)
    shown = dict(place)
    if not rule.tags and "elderly_living_alone" in shown:
        shown["elderly_living_alone"] = None
    if place.get("place_type") == "dwelling":
        level = rule.level(recipient.reason == "owner")
        if not at_least(level, "floor"):
            shown["floor"] = None
        if not at_least(level, "flat"):
            shown["label"] = None
            view["address_id"] = None
            view["device_id"] = None
    view["place"] = shown
    return view


def order_notice(
    *,
    key: str,
    event: str,
    at: datetime,
    order: Mapping[str, Any],
    recipient: Recipient,
    contacts: Sequence[Contact],
    note: str,
) -> dict[str, Any]:
    """The JSON message of docs/orders.md for one recipient."""
    return {
        "v": MESSAGE_VERSION,
        "message_id": key,
        "type": f"order.{event}",
        "at": at.isoformat(),
        "recipient": {
            "org_id": recipient.org_id,
            "role": recipient.role,
            "staff_id": recipient.staff_id,
            "as": recipient.reason,
        },
        "order": order_for(recipient, order),
        "contacts": contacts_for(recipient, contacts),
        "note": note,
    }


def place_summary(context: DeviceContext | None) -> dict[str, Any]:
    """Where the order is, stored with it: no names, no phones (each notice then shows
    only what its recipient may see: :func:`order_for`)."""
    if context is None or context.place is None:
        return {}
    place, residents = context.place, context.residents
    return {
        "label": place.label,
        "place_type": place.place_type,
        "floor": place.floor,
        "building": place.building.name if place.building else None,
        "compound": place.compound.name,
        "residents": residents.residents,
        "elderly_living_alone": residents.elderly_living_alone,
    }
