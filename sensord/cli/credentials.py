"""``sensord credentials issue|rotate|revoke|list``: the principals' broker credentials.

``issue`` and ``rotate`` print the new secret once; only its hash is stored (Mosquitto's
``$7$`` PBKDF2-SHA512, so ``sensord broker config`` can write the password file from it).
Exit status: 0 done; 1 refused (already issued, nothing to rotate or revoke, a device, staff
member or organisation not in the registry) or the database failed; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from sensord import exits
from sensord.cli.common import ArgumentInvalid, as_json, connect, guarded, login_name, print_json
from sensord.config import Settings

NAME = "credentials"
_KINDS = ("device", "gateway", "staff", "app", "sensord")


def register(subparsers: Any) -> None:
    """Add ``credentials`` and its subcommands to the ``sensord`` subparsers."""
    group = subparsers.add_parser(NAME, help="issue, rotate and revoke broker credentials")
    sub = group.add_subparsers(dest="credentials_command", required=True)
    for name, text in (
        ("issue", "a new credential; prints its secret once"),
        ("rotate", "replace a credential's secret; prints the new one once"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("kind", choices=_KINDS)
        cmd.add_argument("principal_id", metavar="ID", help="device, gateway, staff, org or name")
        cmd.add_argument(
            "--devices",
            action="append",
            default=[],
            metavar="ID[,ID…]",
            help="a gateway's devices (repeatable); rotate keeps them when omitted",
        )
    revoke = sub.add_parser("revoke", help="revoke a credential (regenerate the broker config)")
    revoke.add_argument("kind", choices=_KINDS)
    revoke.add_argument("principal_id", metavar="ID")
    listing = sub.add_parser("list", help="every credential, without secrets")
    listing.add_argument("--json", action="store_true", help="print as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen ``credentials`` subcommand; the process exit status."""
    from sensord.adapters.principal_store import CredentialRefused

    return guarded(
        f"sensord credentials {args.credentials_command}",
        lambda: asyncio.run(_run(settings, args)),
        (CredentialRefused,),
    )


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    import secrets

    from sensord.adapters import principal_store as store
    from sensord.core.principals import (
        SALT_BYTES,
        PrincipalInvalid,
        gateway_devices,
        hash_secret,
        username,
    )

    command = args.credentials_command
    now = datetime.now(UTC)
    if command == "list":
        async with await connect(settings, "sensord-credentials") as conn:
            rows = await store.list_principals(conn)
        if args.json:
            print_json([as_json(row) for row in rows])
        for row in [] if args.json else rows:
            state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
            listed = f" devices={','.join(row['devices'])}" if row["devices"] else ""
            print(f"{row['kind']}.{row['id']}  {state}{listed}")
        return exits.OK
    try:
        user = username(args.kind, args.principal_id)
        devices = gateway_devices(getattr(args, "devices", []))
    except PrincipalInvalid as exc:
        raise ArgumentInvalid(str(exc)) from None
    if devices and args.kind != "gateway":
        raise ArgumentInvalid("--devices is for gateways only")
    if command == "issue" and args.kind == "gateway" and not devices:
        raise ArgumentInvalid("a gateway publishes for an explicit list: give --devices")
    async with await connect(settings, "sensord-credentials") as conn:
        if command == "revoke":
            await store.revoke(conn, args.kind, args.principal_id, now)
            print(f"{user}: revoked; regenerate the broker config and reload mosquitto")
            return exits.OK
        if not await store.registered(conn, args.kind, args.principal_id):
            raise store.CredentialRefused(f"no {args.kind} {args.principal_id!r} in the registry")
        for device_id in devices:
            if not await store.registered(conn, "device", device_id):
                raise store.CredentialRefused(f"no device {device_id!r} in the registry")
        secret = secrets.token_urlsafe(24)
        digest = hash_secret(secret, secrets.token_bytes(SALT_BYTES))
        await store.issue(
            conn, args.kind, args.principal_id, digest, devices, login_name(), now,
            replace=command == "rotate",
        )  # fmt: skip
    # The only time the secret exists outside the caller's hands: stdout, never a log.
    print(f"username: {user}")
    print(f"password: {secret}")
    return exits.OK
