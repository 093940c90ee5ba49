"""Notification messages for work-order changes, minimised per recipient (pure).

One message per recipient organisation and channel, with a deterministic
``message_id`` (the outbox's idempotency key): a receiver that sees the same
id twice (a crash between delivery and the outbox commit) drops the copy.

Personal data: residents' names and phones reach only roles that must call or
visit the residents themselves (``CONTACT_ROLES``: the grid worker, the
residents' committee and the city-operations centre); every other recipient
(property company, elevator vendor, maintainer, enforcement, district) gets
them masked, as does a recipient whose organisation did not resolve (the
``unrouted`` topic). Contacts are only attached for a dwelling's own residents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sensord.core.context import DeviceContext
from sensord.core.privacy import mask_name, mask_phone

CONTACT_ROLES = frozenset({"grid_worker", "residents_committee", "ops_centre"})
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
    # An unresolved organisation (topic .../dispatch/unrouted) is nobody in particular.
    full = recipient.role in CONTACT_ROLES and recipient.org_id is not None
    return [
        {
            "name": c.name if full else mask_name(c.name),
            "phone": (c.phone if full else mask_phone(c.phone)) if c.phone else None,
            "tags": list(c.tags),
        }
        for c in contacts
    ]


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
        "order": dict(order),
        "contacts": contacts_for(recipient, contacts),
        "note": note,
    }


def place_summary(context: DeviceContext | None) -> dict[str, Any]:
    """Where the order is, as every recipient may see it: no names, no phones."""
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
