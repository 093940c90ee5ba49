"""The in-memory device directory and its refresh on registry changes.

The ingest path looks every message's device up here, so the lookup is a
dict access; the directory is replaced whole (one reference swap) on each
reload, never mutated, so a reader never sees a half-loaded registry.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from types import MappingProxyType

import psycopg
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.metrics import Metrics
from sensord.core.backoff import Backoff
from sensord.core.messages import DeviceInfo

log = logging.getLogger("sensord.directory")

CHANNEL = "sensord_registry"
_LOAD = "SELECT device_id, kind, street FROM devices"


class DeviceDirectory:
    """Device id -> kind and street, reloaded when the registry notifies a change."""

    def __init__(self, pool: AsyncConnectionPool, metrics: Metrics) -> None:
        self._pool = pool
        self._metrics = metrics
        self._devices: Mapping[str, DeviceInfo] = MappingProxyType({})

    def snapshot(self) -> Mapping[str, DeviceInfo]:
        """The current directory; a consistent, read-only mapping."""
        return self._devices

    async def load(self) -> int:
        """Replace the directory with the database's; return the device count."""
        try:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(_LOAD)
                rows = await cur.fetchall()
        except psycopg.Error:
            self._metrics.registry_reloads.labels("error").inc()
            raise
        self._devices = MappingProxyType(
            {device_id: DeviceInfo(kind, street) for device_id, kind, street in rows}
        )
        self._metrics.registry_reloads.labels("ok").inc()
        self._metrics.registry_devices.set(len(rows))
        return len(rows)

    async def follow(self, conninfo: str, refresh_s: float, backoff: Backoff) -> None:
        """Reload on every NOTIFY of the registry channel, and every ``refresh_s`` regardless."""
        attempt = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # Changes made between the last load and LISTEN would be missed.
                    await self.load()
                    attempt = 0
                    while True:
                        changed = False
                        async for _ in conn.notifies(timeout=refresh_s, stop_after=1):
                            changed = True
                        if changed:
                            # Let a bulk import's burst of notifications settle.
                            await asyncio.sleep(0.2)
                        count = await self.load()
                        if changed:
                            log.info("device directory reloaded", extra={"devices": count})
            except psycopg.Error as exc:
                attempt += 1
                delay = backoff.delay(attempt, random.random)
                self._metrics.database_errors.labels("directory").inc()
                log.warning(
                    "device directory refresh failed; keeping the last one",
                    extra={"retry_in_s": round(delay, 2), "error": str(exc)},
                )
                await asyncio.sleep(delay)
