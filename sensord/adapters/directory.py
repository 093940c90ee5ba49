"""The in-memory registry snapshot and its refresh on registry changes, without a restart.

The ingest path looks every message's device up here, and the rule engine and
the dispatcher its context (place, residents' tags, grid chain, responsible
organisations: ``core/context``); each lookup is one dict access. The
snapshot is never mutated: a reload builds a new one in a worker thread and
swaps one reference, so a reader sees the old registry or the new one, never
half of each.

Refresh: ``open()`` LISTENs on ``sensord_registry`` and then loads, so a
change committed after the load is always notified; ``follow()`` reloads on
every notification (debounced: an import notifies once per table it
changed, all at its commit) and every ``refresh_s`` regardless. A failed
reload keeps the last good snapshot, counts
``sensord_registry_reloads_total{result="error"}`` and retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import date

import psycopg

from sensord.adapters.metrics import Metrics
from sensord.adapters.registry_snapshot import LoadedSnapshot, load_snapshot
from sensord.core.backoff import Backoff
from sensord.core.context import EMPTY, DeviceContext, RegistrySnapshot
from sensord.core.messages import DeviceInfo
from sensord.retry import Retry

log = logging.getLogger("sensord.directory")

CHANNEL = "sensord_registry"
DEBOUNCE_S = 0.2  # a burst of notifications is over once the channel is this quiet...
DEBOUNCE_MAX_S = 2.0  # ...or this long after its first notification

Loader = Callable[[str], LoadedSnapshot]


class RegistryDirectory:
    """The current :class:`RegistrySnapshot`, reloaded when the registry changes."""

    def __init__(
        self,
        conninfo: str,
        listen_conninfo: str,
        metrics: Metrics,
        *,
        loader: Loader = load_snapshot,
        debounce_s: float = DEBOUNCE_S,
        debounce_max_s: float = DEBOUNCE_MAX_S,
    ) -> None:
        self._conninfo = conninfo
        # A LISTEN connection that silently lost its peer would never see a notification.
        self._listen_conninfo = psycopg.conninfo.make_conninfo(
            listen_conninfo, keepalives=1, keepalives_idle=30, keepalives_interval=10,
            keepalives_count=3,
        )  # fmt: skip
        self._metrics = metrics
        self._loader = loader
        self._debounce_s = debounce_s
        self._debounce_max_s = debounce_max_s
        self._snapshot: RegistrySnapshot = EMPTY
        self._listener: psycopg.AsyncConnection | None = None
        self._reload_lock = asyncio.Lock()

    # --- readers: cheap, any time, from any task

    def snapshot(self) -> RegistrySnapshot:
        """The current snapshot; hold on to it to read several devices consistently."""
        return self._snapshot

    def devices(self) -> Mapping[str, DeviceInfo]:
        """Device id -> kind and street, read-only: what the ingest decoder checks against."""
        return self._snapshot.devices

    def context(self, device_id: str) -> DeviceContext | None:
        """A device's resolved context in the current snapshot; None if not registered."""
        return self._snapshot.contexts.get(device_id)

    def heartbeats(self) -> Mapping[str, tuple[str, int | None]]:
        """Device id -> (kind, heartbeat interval): what the absence rules check against."""
        return {
            device_id: (context.device.kind, context.device.heartbeat_s)
            for device_id, context in self._snapshot.contexts.items()
        }

    def inspections_due(self) -> Mapping[str, tuple[str, date | None]]:
        """Device id -> (kind, inspection due date): what the inspection rules check against."""
        return {
            device_id: (context.device.kind, context.device.inspection_due)
            for device_id, context in self._snapshot.contexts.items()
        }

    # --- lifecycle

    async def open(self) -> RegistrySnapshot:
        """LISTEN, then load the first snapshot; raises if either fails."""
        self._listener = await self._listen()
        try:
            return await self.reload("start")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the LISTEN connection (follow() reopens one if it runs again)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(psycopg.Error):
                await listener.close()

    async def reload(self, trigger: str) -> RegistrySnapshot:
        """Build a new snapshot off the event loop and swap it in; raises if that fails.

        On failure the current snapshot stays, and the error is counted. Calls
        are serialised (follow() and SIGHUP both reload), so a snapshot read
        later is never replaced by one read earlier.
        """
        async with self._reload_lock:
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> RegistrySnapshot:
        started = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(self._loader, self._conninfo)
        except Exception:
            self._metrics.registry_reloads.labels("error").inc()
            raise
        previous, self._snapshot = self._snapshot, loaded.snapshot
        duration = time.perf_counter() - started
        stats = loaded.snapshot.stats
        self._metrics.registry_reloads.labels("ok").inc()
        self._metrics.registry_reload_seconds.observe(duration)
        self._metrics.registry_devices.set(stats.devices)
        quiet = trigger == "periodic" and stats == previous.stats
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "registry snapshot loaded",
            extra={
                "trigger": trigger,
                "devices": stats.devices,
                "unplaced": stats.unplaced,
                "unassigned": stats.unassigned,
                "addresses": stats.addresses,
                "residents": stats.residents,
                "grid_units": stats.grid_units,
                "organisations": stats.organisations,
                "staff": stats.staff,
                "responsibilities": stats.responsibilities,
                "rows": loaded.rows,
                "read_s": round(loaded.read_s, 4),
                "build_s": round(loaded.build_s, 4),
                "duration_s": round(duration, 4),
            },
        )
        return loaded.snapshot

    async def follow(self, refresh_s: float, retry: Backoff | Retry) -> None:
        """Reload on every (debounced) NOTIFY, and every ``refresh_s`` regardless; never returns.

        Call after open(). Any failure (the database, the LISTEN connection, a
        reload) is logged and counted here, the last good snapshot stays, and
        the loop reconnects, re-LISTENs and reloads after a backoff.
        """
        attempts = Retry.of(retry).attempts()
        try:
            while True:
                try:
                    if self._listener is None:
                        self._listener = await self._listen()
                        # Changes committed while nobody listened were not notified.
                        await self.reload("listen")
                    attempts.reset()
                    await self._follow(self._listener, refresh_s)
                except Exception as exc:  # loop boundary: logged, counted, retried
                    delay = attempts.failed()
                    if isinstance(exc, psycopg.Error):
                        self._metrics.database_errors.labels("registry").inc()
                    log.warning(
                        "registry refresh failed; keeping the last snapshot",
                        extra={
                            "retry_in_s": round(delay, 2),
                            "error": f"{type(exc).__name__}: {exc}",
                            "devices": len(self._snapshot),
                        },
                    )
                    await self.close()
                    await attempts.pause(delay)
        finally:
            await self.close()

    async def _follow(self, conn: psycopg.AsyncConnection, refresh_s: float) -> None:
        while True:
            trigger = "periodic"
            async for _ in conn.notifies(timeout=refresh_s, stop_after=1):
                trigger = "notify"
            if trigger == "notify":
                await self._settle(conn)
            await self.reload(trigger)

    async def _settle(self, conn: psycopg.AsyncConnection) -> None:
        """Wait for the channel to be quiet for ``debounce_s``, at most ``debounce_max_s``."""
        deadline = time.monotonic() + self._debounce_max_s
        while (left := deadline - time.monotonic()) > 0:
            quiet = True
            async for _ in conn.notifies(timeout=min(self._debounce_s, left), stop_after=1):
                quiet = False
            if quiet:
                return

    async def _listen(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self._listen_conninfo, autocommit=True)
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await conn.close()
            raise
        return conn
