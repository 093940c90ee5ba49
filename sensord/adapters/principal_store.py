"""Issued credentials (table ``principals``) and what the broker config needs of the registry:
named queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from sensord.core.principals import DevicePlace, Kind, Principal
from sensord.errors import SensordError


class CredentialRefused(SensordError):
    """The credential command does not apply (unknown, revoked, already issued)."""


async def issue(
    conn: AsyncConnection[Any],
    kind: Kind,
    principal_id: str,
    secret_hash: str,
    devices: tuple[str, ...],
    by: str,
    now: datetime,
    *,
    replace: bool,
) -> None:
    """Store a new hash; ``replace`` (rotate) requires an active one, else none may exist."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(
            "SELECT revoked_at IS NULL, devices FROM principals"
            " WHERE kind = %s AND principal_id = %s FOR UPDATE",
            (kind, principal_id),
        )
        row = await cur.fetchone()
        if replace and (row is None or not row[0]):
            raise CredentialRefused(f"{kind} {principal_id} has no active credential to rotate")
        if not replace and row is not None and row[0]:
            raise CredentialRefused(
                f"{kind} {principal_id} already has an active credential (rotate or revoke it)"
            )
        if replace and not devices:
            devices = tuple(row[1]) if row else ()
        await cur.execute(
            "INSERT INTO principals (kind, principal_id, devices, secret_hash, issued_at,"
            " issued_by) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (kind, principal_id) DO UPDATE SET devices = EXCLUDED.devices,"
            " secret_hash = EXCLUDED.secret_hash, issued_at = EXCLUDED.issued_at,"
            " issued_by = EXCLUDED.issued_by, revoked_at = NULL",
            (kind, principal_id, list(devices), secret_hash, now, by),
        )


async def revoke(conn: AsyncConnection[Any], kind: Kind, principal_id: str, now: datetime) -> None:
    """Mark a credential revoked (the row stays: who held it, and when)."""
    cur = await conn.execute(
        "UPDATE principals SET revoked_at = %s"
        " WHERE kind = %s AND principal_id = %s AND revoked_at IS NULL",
        (now, kind, principal_id),
    )
    if cur.rowcount == 0:
        raise CredentialRefused(f"{kind} {principal_id} has no active credential")


async def active_principals(conn: AsyncConnection[Any]) -> list[Principal]:
    """Every credential not revoked."""
    cur = await conn.execute(
        "SELECT kind, principal_id, secret_hash, devices FROM principals"
        " WHERE revoked_at IS NULL ORDER BY kind, principal_id"
    )
    return [Principal(k, i, h, tuple(d)) for k, i, h, d in await cur.fetchall()]


async def list_principals(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Every credential, revoked ones too, without the hash."""
    cur = await conn.execute(
        "SELECT kind, principal_id, devices, issued_at, issued_by, revoked_at FROM principals"
        " ORDER BY kind, principal_id"
    )
    names = ("kind", "id", "devices", "issued_at", "issued_by", "revoked_at")
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


_REGISTERED = {
    "device": "SELECT 1 FROM devices WHERE device_id = %s",
    "staff": "SELECT 1 FROM staff WHERE staff_id = %s",
    "app": "SELECT 1 FROM organisations WHERE org_id = %s",
}


async def registered(conn: AsyncConnection[Any], kind: Kind, principal_id: str) -> bool:
    """Whether the registry knows the principal's subject (device, staff, organisation)."""
    query = _REGISTERED.get(kind)
    if query is None:
        return True  # gateways and sensord accounts are not registry rows
    cur = await conn.execute(query, (principal_id,))
    return await cur.fetchone() is not None


async def device_places(conn: AsyncConnection[Any]) -> list[DevicePlace]:
    """Every registered device's id, street and kind (its topics)."""
    cur = await conn.execute("SELECT device_id, street, kind FROM devices ORDER BY device_id")
    return [DevicePlace(*row) for row in await cur.fetchall()]
