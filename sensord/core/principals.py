"""Principals, their broker usernames, password-file hashes and the ACL that binds topics to
them (pure).

A principal is ``<kind>.<id>`` on the broker: ``device.SD-1``, ``gateway.gw-7``,
``staff.S-12``, ``app.prop-3`` (an organisation's service account, id = its ``org_id``),
``sensord.main`` (one per sensord instance). The kind prefix keeps a device and a member of
staff with the same id apart. Identity comes from the connection (the broker checks the
password and applies the ACL), never from a payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sensord.errors import SensordError

Kind = Literal["device", "gateway", "staff", "app", "sensord"]
KINDS: tuple[Kind, ...] = ("device", "gateway", "staff", "app", "sensord")
# Kinds that may send order commands: a member of staff as themselves, an app for its staff.
COMMANDERS: frozenset[str] = frozenset({"staff", "app"})
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Mosquitto 2.0's password file format: $7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>
# (what mosquitto_passwd writes). Secrets are 192 random bits, so stretching adds little;
# 1,000 iterations keep a fleet's reconnect storm cheap for the broker (docs/security.md).
ITERATIONS = 1_000
SALT_BYTES = 12
_HASH_BYTES = 64


class PrincipalInvalid(SensordError):
    """A principal id or kind that cannot be issued."""


@dataclass(frozen=True, slots=True)
class Principal:
    """One issued credential's owner, as the registry of credentials holds it."""

    kind: Kind
    id: str
    secret_hash: str
    devices: tuple[str, ...] = ()  # a gateway's devices

    @property
    def username(self) -> str:
        return username(self.kind, self.id)


@dataclass(frozen=True, slots=True)
class DevicePlace:
    """What the topic grammar needs of a registered device."""

    device_id: str
    street: str
    kind: str


@dataclass(frozen=True, slots=True)
class Acl:
    """The ACL of one broker username: topics it may read and write."""

    username: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    comments: tuple[str, ...] = field(default=())


def username(kind: Kind, principal_id: str) -> str:
    """The broker username of a principal; PrincipalInvalid for a bad kind or id."""
    if kind not in KINDS:
        raise PrincipalInvalid(f"unknown principal kind {kind!r}; one of {', '.join(KINDS)}")
    if not _ID.fullmatch(principal_id):
        raise PrincipalInvalid(f"{principal_id!r}: an id is 1-64 of [A-Za-z0-9_.-]")
    return f"{kind}.{principal_id}"


def split_username(name: str) -> tuple[str, str] | None:
    """``(kind, id)`` of a broker username; None when it is not one of ours."""
    kind, dot, principal_id = name.partition(".")
    if not dot or kind not in KINDS or not _ID.fullmatch(principal_id):
        return None
    return kind, principal_id


def hash_secret(secret: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    """The Mosquitto ``$7$`` hash of ``secret`` (salt passed in: the core has no randomness)."""
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations, _HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, secret_hash: str) -> bool:
    """Whether ``secret`` matches a ``$7$`` hash (what the broker does on CONNECT)."""
    parts = secret_hash.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, int(parts[2]), len(expected))
    return hmac.compare_digest(digest, expected)


def reading_topics(device: DevicePlace, prefix: str) -> tuple[str, ...]:
    """The topics a device's readings and heartbeats arrive on (core/topics.py grammar)."""
    base = f"{prefix}/{device.street}"
    return (f"{base}/{device.kind}/{device.device_id}", f"{base}/heartbeat/{device.device_id}")


def command_topic_filter(prefix: str, user: str) -> str:
    """The command topics a principal may write: its own segment on every order."""
    return f"{prefix}/+/orders/+/events/{user}"


def acl_for(principal: Principal, devices: Mapping[str, DevicePlace], prefix: str) -> Acl:
    """What one principal may read and write; a device not in the registry gets nothing."""
    user = principal.username
    if principal.kind == "device":
        place = devices.get(principal.id)
        if place is None:
            return Acl(user, comments=(f"device {principal.id} is not in the registry",))
        return Acl(user, write=reading_topics(place, prefix))
    if principal.kind == "gateway":
        write: list[str] = []
        missing: list[str] = []
        for device_id in principal.devices:
            place = devices.get(device_id)
            if place is None:
                missing.append(device_id)
            else:
                write.extend(reading_topics(place, prefix))
        comments = (f"not in the registry: {', '.join(missing)}",) if missing else ()
        return Acl(user, write=tuple(write), comments=comments)
    if principal.kind in COMMANDERS:
        replies = f"{prefix}/+/orders/+/replies"
        read = (
            (replies, f"{prefix}/+/dispatch/{principal.id}")
            if principal.kind == "app"
            else (replies,)
        )
        return Acl(user, read=read, write=(command_topic_filter(prefix, user),))
    # sensord: reads everything of the protocol, alone writes notices and replies.
    return Acl(
        user,
        read=(f"{prefix}/#",),
        write=(f"{prefix}/+/dispatch/+", f"{prefix}/+/orders/+/replies"),
    )


def acl_file(principals: Iterable[Principal], devices: Iterable[DevicePlace], prefix: str) -> str:
    """A Mosquitto ``acl_file``: no rule for anonymous clients, one block per principal.

    Mosquitto denies whatever no rule allows, so a principal writes only the topics listed
    under its ``user`` line.
    """
    places = {d.device_id: d for d in devices}
    lines = [
        "# Generated by `sensord broker config`; do not edit (regenerate after a registry",
        "# or credential change, then reload mosquitto with SIGHUP).",
        "# No lines before the first `user`: anonymous clients may do nothing.",
    ]
    for principal in sorted(principals, key=lambda p: p.username):
        acl = acl_for(principal, places, prefix)
        lines.append("")
        lines.extend(f"# {comment}" for comment in acl.comments)
        lines.append(f"user {acl.username}")
        lines.extend(f"topic read {topic}" for topic in acl.read)
        lines.extend(f"topic write {topic}" for topic in acl.write)
    return "\n".join(lines) + "\n"


def password_file(principals: Iterable[Principal]) -> str:
    """A Mosquitto ``password_file``: ``username:$7$…`` per principal."""
    return "".join(f"{p.username}:{p.secret_hash}\n" for p in sorted(principals, key=_by_user))


def include_snippet(directory: str) -> str:
    """The global lines that make Mosquitto use the generated files (``include_dir`` it).

    ``use_username_as_clientid`` is a listener option and an included file has no
    listener: Mosquitto would open a default one. The site writes it under each of its
    listeners (docs/operations.md); the comment says so.
    """
    return (
        "# Generated by `sensord broker config`: `include_dir` this directory from\n"
        "# mosquitto.conf. Also write `use_username_as_clientid true` under every\n"
        "# listener: the client id is then the username, so nobody can take over another\n"
        "# principal's session (sensord's above all) by choosing its client id.\n"
        "allow_anonymous false\n"
        f"password_file {directory}/passwords\n"
        f"acl_file {directory}/acl\n"
    )


def _by_user(principal: Principal) -> str:
    return principal.username


def gateway_devices(text: Sequence[str]) -> tuple[str, ...]:
    """The device ids a ``--devices`` option lists (comma separated, repeatable)."""
    ids = [part.strip() for item in text for part in item.split(",") if part.strip()]
    for device_id in ids:
        if not _ID.fullmatch(device_id):
            raise PrincipalInvalid(f"{device_id!r}: a device id is 1-64 of [A-Za-z0-9_.-]")
    return tuple(dict.fromkeys(ids))
