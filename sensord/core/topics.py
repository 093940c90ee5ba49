"""Topic grammar of protocol v1: ``sensord/v1/<street>/<kind>/<device_id>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sensord.core.registry.vocabulary import DEVICE_KINDS
from sensord.errors import PayloadError

# What a topic's <kind> may be: a device's kind, or a heartbeat (a kind of message).
TOPIC_KINDS: tuple[str, ...] = (*DEVICE_KINDS, "heartbeat")
PREFIX = "sensord/v1"

_STREET = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DEVICE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Topic:
    """The parts of a reading's topic."""

    street: str
    kind: str
    device_id: str


def reading_subscription(prefix: str = PREFIX) -> str:
    """The topic filter that matches every reading of every street."""
    return f"{prefix}/+/+/+"


def parse_topic(topic: str, prefix: str = PREFIX) -> Topic:
    """Split a reading topic into street, kind and device id.

    Raises PayloadError("bad_topic") naming the part that is wrong.
    """
    parts = topic.split("/")
    if len(parts) != prefix.count("/") + 4 or "/".join(parts[:-3]) != prefix:
        raise PayloadError("bad_topic", f"expected {prefix}/<street>/<kind>/<device_id>")
    street, kind, device_id = parts[-3], parts[-2], parts[-1]
    if not _DEVICE.fullmatch(device_id):
        raise PayloadError("bad_topic", "device_id must be 1-64 of [A-Za-z0-9_.-]")
    if not _STREET.fullmatch(street):
        raise PayloadError("bad_topic", "street must be 1-64 of [A-Za-z0-9_-]", device_id)
    if kind not in TOPIC_KINDS:
        raise PayloadError("bad_topic", f"unknown kind {kind!r}", device_id)
    return Topic(street, kind, device_id)
