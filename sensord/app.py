"""Composition root: builds every adapter and service, runs them, stops them in order.

Start: metrics endpoint -> database (waits for it) -> schema check -> registry
snapshot (LISTEN, then load) -> writers -> broker session -> READY=1.
Stop (SIGTERM/SIGINT; a second signal forces): STOPPING=1 -> refuse new
messages -> writers flush what is buffered -> handlers send their PUBACKs ->
DISCONNECT (the broker keeps the session) -> close the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Counter, start_http_server
from psycopg_pool import AsyncConnectionPool

from sensord import __version__, exits
from sensord.adapters import migrations
from sensord.adapters.alert_store import load_count_history, load_last_seen, load_states
from sensord.adapters.database import ReadingStore, conninfo, make_pool
from sensord.adapters.directory import RegistryDirectory
from sensord.adapters.metrics import Metrics
from sensord.adapters.mqtt import MqttConsumer, quiet_unacknowledged
from sensord.adapters.mqtt_publisher import MqttPublisher
from sensord.adapters.order_store import Outlets
from sensord.adapters.rule_files import load_policy, load_rules
from sensord.adapters.systemd import Notifier
from sensord.adapters.webhooks import WebhookSender
from sensord.clock import Clock, SystemClock
from sensord.config import Settings
from sensord.core.backoff import Backoff
from sensord.core.batching import Batcher, BatchPolicy
from sensord.core.messages import DecodeLimits, decode
from sensord.core.orders.commands import command_subscription, parse_command_topic
from sensord.core.orders.notices import is_notification
from sensord.core.rules.engine import RuleEngine
from sensord.core.rules.fields import context_fields
from sensord.errors import RuleError
from sensord.paths import migrations_directory, policy_file, rules_directory
from sensord.services.alerts import AlertPipeline, commit_work, watch_absence
from sensord.services.dispatcher import Dispatcher
from sensord.services.ingest import IngestBuffer, Item
from sensord.services.order_actions import CommandHandler
from sensord.services.outbox import OutboxRelay
from sensord.services.retention import run_retention
from sensord.services.writer import Writer

log = logging.getLogger("sensord.app")
T = TypeVar("T")

@dataclass
class Daemon:
    """The running pieces, exposed for tests and the metrics endpoint."""

    settings: Settings
    metrics: Metrics
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    metrics_port: int | None = None


async def run(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
    on_start: Callable[[Daemon], None] | None = None,
    install_signals: bool = True,
) -> int:
    """Run the daemon until stopped; return the process exit code."""
    daemon = Daemon(settings, Metrics(registry or CollectorRegistry()))
    if on_start is not None:
        on_start(daemon)
    loop = asyncio.get_running_loop()
    quiet_unacknowledged(loop)
    notifier = Notifier()
    if install_signals:
        _install_signals(loop, daemon.stop)
    server = _serve_metrics(daemon)
    pool = make_pool(settings.database)
    code = exits.FAILED
    try:
        code = await _run(daemon, pool, notifier, clock or SystemClock(), install_signals)
    except* RuleError as invalid:
        for refused in invalid.exceptions:
            problems = refused.problems if isinstance(refused, RuleError) else [str(refused)]
            log.critical(
                "rules or dispatch policy invalid; not starting", extra={"problems": problems}
            )
        code = exits.CONFIG  # fix the files; restarting would not help
    except* Exception as group:
        for exc in group.exceptions:
            log.critical("fatal error, exiting", exc_info=exc)
    finally:
        await pool.close()
        if server is not None:
            server.shutdown()
    return code


async def _run(
    daemon: Daemon,
    pool: AsyncConnectionPool,
    notifier: Notifier,
    clock: Clock,
    install_signals: bool,
) -> int:
    settings, metrics = daemon.settings, daemon.metrics
    ingest = settings.ingest
    retry = Backoff(ingest.retry_initial_s, ingest.retry_max_s)
    notifier.send(f"STATUS=waiting for the database at {_where(settings.database.dsn)}")
    if not await _wait_for_database(conninfo(settings.database), retry, daemon.stop):
        return exits.OK
    if not await _schema_current(settings):
        return exits.SCHEMA_BEHIND
    # Only now: each pool connection prepares a staging table LIKE readings.
    await pool.open(wait=False)

    directory = RegistryDirectory(
        conninfo(settings.database, "sensord-registry"),
        conninfo(settings.database, "sensord-directory"),
        metrics,
    )
    await directory.open()
    buffer = _ingest_buffer(settings, directory, clock, metrics)
    alerts = (
        await _alert_pipeline(settings, pool, directory, metrics, clock)
        if settings.rules.enabled
        else None
    )
    dispatch = _dispatch(settings, pool, directory, metrics, clock, retry, alerts)
    if install_signals:
        _install_reload(asyncio.get_running_loop(), directory, settings, alerts, dispatch, metrics)
    store = ReadingStore(pool)
    writers = [
        Writer(f"writer-{n}", buffer, store, retry, clock, metrics, alerts)
        for n in range(ingest.writers)
    ]
    consumer = MqttConsumer(
        settings.mqtt,
        _router(settings.mqtt.topic_prefix, buffer.handle, dispatch.commands if dispatch else None),
        metrics,
        dispatch.subscriptions if dispatch else (),
    )
    buffer.on_pressure = consumer.backpressure
    scheduler = _scheduler(
        settings, pool, metrics, alerts, dispatch, directory, store, clock, retry
    )

    async with asyncio.TaskGroup() as group:
        writing = [group.create_task(w.run(), name=f"sensord.{w.name}") for w in writers]
        background = [
            group.create_task(
                directory.follow(ingest.registry_refresh_s, retry),
                name="sensord.directory",
            )
        ]
        if alerts is not None:
            background.append(
                group.create_task(
                    watch_absence(
                        alerts,
                        _heartbeats(directory),
                        store,
                        clock,
                        settings.rules.absence_check_s,
                        retry,
                    ),
                    name="sensord.absence",
                )
            )
        background.append(group.create_task(_watch_loop_lag(metrics), name="sensord.lag"))
        background += dispatch.start(group, retry) if dispatch else []
        starting = group.create_task(consumer.start(), name="sensord.mqtt")
        stopping = asyncio.ensure_future(daemon.stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            scheduler.start()
            notifier.send("READY=1", f"STATUS=ingesting; {len(directory.snapshot())} devices")
            daemon.ready.set()
            # Everything built so far (modules, registry snapshot) lives as long as the
            # process: keep it out of the cyclic GC so a collection after a registry
            # reload does not traverse it (measured: 45-60 ms loop pauses without).
            gc.freeze()
            log.info(
                "sensord started",
                extra={"version": __version__, "devices": len(directory.snapshot())},
            )
            if notifier.watchdog_interval_s():
                background.append(
                    group.create_task(
                        _watchdog(notifier, writers, consumer, clock, settings.shutdown.timeout_s),
                        name="sensord.watchdog",
                    )
                )
        await stopping
        notifier.send("STOPPING=1", "STATUS=flushing and acknowledging")
        log.info("stopping: flushing buffered messages", extra={"pending": buffer.pending})
        starting.cancel()
        if scheduler.running:
            scheduler.shutdown(wait=False)
        clean = await _drain(buffer, writing, consumer, settings.shutdown.timeout_s)
        await consumer.stop()
        if dispatch is not None:
            await dispatch.stop(settings.shutdown.timeout_s)
        for task in background:
            task.cancel()
    log.info("sensord stopped", extra={"clean": clean})
    return exits.OK


def _ingest_buffer(
    settings: Settings, directory: RegistryDirectory, clock: Clock, metrics: Metrics
) -> IngestBuffer:
    ingest = settings.ingest
    limits = DecodeLimits(
        ingest.max_payload_bytes,
        timedelta(seconds=ingest.max_future_s),
        timedelta(days=ingest.max_past_days),
    )
    batcher: Batcher[Item] = Batcher(
        BatchPolicy(ingest.batch_max_items, ingest.batch_max_age_ms / 1000, ingest.capacity)
    )
    buffer = IngestBuffer(
        batcher,
        functools.partial(decode, limits=limits, prefix=settings.mqtt.topic_prefix),
        directory.devices,
        clock,
        metrics,
    )
    metrics.sample_ingest(lambda: buffer.received, lambda: buffer.pending)
    return buffer


async def _drain(
    buffer: IngestBuffer,
    writing: list[asyncio.Task[None]],
    consumer: MqttConsumer,
    timeout_s: float,
) -> bool:
    """Flush and acknowledge what is buffered; what cannot be, stays unacked for redelivery."""
    buffer.stop_accepting()
    _, late = await asyncio.wait(writing, timeout=timeout_s)
    for task in late:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*late, return_exceptions=True)
    left = buffer.abandon("stopped before the database accepted the batch")
    await consumer.settled(timeout_s=2.0)
    if late or left:
        log.warning(
            "stopped with messages unacknowledged; the broker redelivers them next session",
            extra={"unacknowledged": left},
        )
    return not late and not left


async def _schema_current(settings: Settings) -> bool:
    missing = await asyncio.to_thread(
        migrations.pending,
        conninfo(settings.database, "sensord-migrate"),
        migrations_directory(settings),
    )
    if missing:
        log.critical(
            "database schema is behind; run `sensord migrate` first",
            extra={"pending": [f"{m.version:04d}_{m.name}" for m in missing]},
        )
    return not missing


async def _wait_for_database(dsn: str, backoff: Backoff, stop: asyncio.Event) -> bool:
    attempt = 0
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception as exc:  # any failure here means "not yet"; it is logged
            attempt += 1
            delay = backoff.delay(attempt, random.random)
            log.warning(
                "database not reachable yet",
                extra={"attempt": attempt, "retry_in_s": round(delay, 2), "error": str(exc)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return False


async def _watchdog(
    notifier: Notifier,
    writers: list[Writer],
    consumer: MqttConsumer,
    clock: Clock,
    stuck_after_s: float,
) -> None:
    """Ping systemd only while the loops are healthy: a wedged writer stops the pings."""
    interval = notifier.watchdog_interval_s() or 10.0
    while True:
        now = clock.monotonic()
        wedged = [
            w.name
            for w in writers
            if w.busy_since is not None and now - w.busy_since > stuck_after_s
        ]
        if wedged:
            log.error("writer wedged; withholding the watchdog ping", extra={"writers": wedged})
        else:
            notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval)


def _router(
    prefix: str, readings: Callable[[str, bytes], Awaitable[None]], commands: CommandHandler | None
) -> Callable[[str, bytes], Awaitable[None]]:
    """The consumer's handler: order commands to the dispatcher, readings to ingest."""

    async def handle(topic: str, payload: bytes) -> None:
        if is_notification(topic, prefix):
            return  # our own notification echoed back by <prefix>/+/+/+: acknowledged, not data
        where = parse_command_topic(topic, prefix) if commands else None
        if where is None or commands is None:
            await readings(topic, payload)
        else:
            await commands.handle(where, payload)

    return handle


async def _watch_loop_lag(metrics: Metrics, interval_s: float = 0.5) -> None:
    """How late a timer fires: what every handler on the loop waits on top of its own work."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.event_loop_lag.observe(max(loop.time() - due, 0.0))


@dataclass
class _DispatchServices:
    """Work orders: the dispatcher, the outbox relay and its publishers, inbound commands."""

    settings: Settings
    dispatcher: Dispatcher
    relay: OutboxRelay
    publisher: MqttPublisher
    webhooks: WebhookSender
    commands: CommandHandler | None
    relaying: asyncio.Task[None] | None = None

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """Topics the consumer subscribes to besides the readings."""
        prefix = self.settings.mqtt.topic_prefix
        return (command_subscription(prefix),) if self.commands else ()

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        """The deadline auditor, as one of sensord's periodic jobs."""
        scheduler.add_job(
            self.dispatcher.audit,
            "interval",
            seconds=self.settings.dispatch.audit_interval_s,
            id="deadline-audit",
            max_instances=1,
            coalesce=True,
        )

    def start(self, group: asyncio.TaskGroup, retry: Backoff) -> list[asyncio.Task[None]]:
        """Run the publisher, the dispatcher and the relay in ``group``."""
        config = self.settings.dispatch
        self.relaying = group.create_task(
            self.relay.run(config.outbox_interval_s, retry), name="sensord.outbox"
        )
        return [
            group.create_task(self.publisher.start(), name="sensord.publisher"),
            group.create_task(
                self.dispatcher.run(config.interval_s, retry), name="sensord.dispatcher"
            ),
            self.relaying,
        ]

    async def stop(self, timeout_s: float) -> None:
        """Let the relay finish what it is sending, then close its connections."""
        if self.relaying is not None:
            await self.relay.drain(self.relaying, timeout_s)
        await self.publisher.stop()
        await self.webhooks.close()


def _dispatch(
    settings: Settings,
    pool: AsyncConnectionPool,
    directory: RegistryDirectory,
    metrics: Metrics,
    clock: Clock,
    retry: Backoff,
    alerts: AlertPipeline | None,
) -> _DispatchServices | None:
    config = settings.dispatch
    if not config.enabled:
        return None
    policy = load_policy(policy_file(settings))  # RuleError: fatal at start-up
    outlets = Outlets.from_settings(settings)
    publisher = MqttPublisher(settings.mqtt)
    webhooks = WebhookSender(dict(config.webhooks))
    relay = OutboxRelay(
        pool, publisher, webhooks, clock, metrics,
        batch=config.outbox_batch,
        retry=Backoff(config.retry_initial_s, config.retry_max_s),
        publish_timeout_s=config.publish_timeout_s,
    )  # fmt: skip
    dispatcher = Dispatcher(
        pool, policy, directory.context, outlets, clock, metrics,
        batch=config.batch, audit_grace_s=config.audit_grace_s, on_notices=relay.wake.set,
    )  # fmt: skip
    commands = (
        CommandHandler(pool, outlets, clock, metrics, on_notices=relay.wake.set)
        if config.commands
        else None
    )
    if alerts is not None:
        alerts.on_fired = dispatcher.wake.set  # a new alert is dispatched at once, not at the tick
    log.info("dispatch policy loaded", extra={"routes": len(policy.routes)})
    return _DispatchServices(settings, dispatcher, relay, publisher, webhooks, commands)


def _serve_metrics(daemon: Daemon) -> WSGIServer | None:
    config = daemon.settings.metrics
    if not config.enabled:
        return None
    server, _thread = start_http_server(config.port, config.host, registry=daemon.metrics.registry)
    daemon.metrics_port = server.server_port
    log.info("metrics endpoint up", extra={"address": f"{config.host}:{server.server_port}"})
    return server


def _where(dsn: str) -> str:
    """host:port/dbname of a DSN in either form, never its credentials."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured database"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


async def _alert_pipeline(
    settings: Settings,
    pool: AsyncConnectionPool,
    directory: RegistryDirectory,
    metrics: Metrics,
    clock: Clock,
) -> AlertPipeline:
    """The rule engine, resumed from the persisted rule states and the stored readings."""
    rules = load_rules(rules_directory(settings))  # RuleError: fatal at start-up
    horizon = timedelta(days=settings.rules.state_horizon_days)
    counted = {r.counts_category for r in rules.rules if r.counts_category}
    longest = max((r.window_s or 0 for r in rules.rules if r.type == "count"), default=0)
    async with pool.connection() as conn, conn.cursor() as cur:
        states = await load_states(cur)
        last_ts, last_received = await load_last_seen(cur, horizon)
        history = await load_count_history(cur, counted, timedelta(seconds=longest))
    log.info("rules loaded", extra={"rules": len(rules.rules), "states": len(states)})
    engine = RuleEngine(
        rules,
        states,
        last_ts,
        started_at=clock.now(),
        last_received=last_received,
        history=history,
    )
    return AlertPipeline(engine, _context_fields(directory), metrics)


def _scheduler(
    settings: Settings,
    pool: AsyncConnectionPool,
    metrics: Metrics,
    alerts: AlertPipeline | None,
    dispatch: _DispatchServices | None,
    directory: RegistryDirectory,
    store: ReadingStore,
    clock: Clock,
    retry: Backoff,
) -> AsyncIOScheduler:
    """sensord's own periodic jobs: retention, the registry checks of the rules, and the
    deadline auditor."""
    scheduler = AsyncIOScheduler()
    if alerts is not None:
        scheduler.add_job(
            commit_inspections,
            "interval",
            args=(alerts, directory, store, clock, retry),
            seconds=settings.rules.registry_check_s,
            next_run_time=clock.now(),  # once at start, then periodically
            id="inspections",
            max_instances=1,
            coalesce=True,
        )
    scheduler.add_job(
        run_retention,
        "interval",
        args=(pool, settings.retention, metrics),
        seconds=settings.retention.interval_s,
        id="retention",
        max_instances=1,
        coalesce=True,
    )
    if dispatch is not None:
        dispatch.schedule(scheduler)
    return scheduler


async def commit_inspections(
    alerts: AlertPipeline,
    directory: RegistryDirectory,
    store: ReadingStore,
    clock: Clock,
    backoff: Backoff,
) -> None:
    """The scheduled registry check: inspection dates against the inspection rules."""
    due = {
        device_id: (context.device.kind, context.device.inspection_due)
        for device_id, context in directory.snapshot().contexts.items()
    }
    await commit_work(alerts, alerts.check_inspections(clock.now(), due), store, backoff)


def _heartbeats(directory: RegistryDirectory) -> Callable[[], Mapping[str, tuple[str, int | None]]]:
    """Device -> (kind, heartbeat interval) from the current registry snapshot."""

    def devices() -> Mapping[str, tuple[str, int | None]]:
        return {
            device_id: (context.device.kind, context.device.heartbeat_s)
            for device_id, context in directory.snapshot().contexts.items()
        }

    return devices


def _context_fields(directory: RegistryDirectory) -> Callable[[str], Mapping[str, Any]]:
    """context_fields per device, cached for as long as the registry snapshot lasts."""
    cache: dict[str, Mapping[str, Any]] = {}
    current: list[object] = [None]

    def fields(device_id: str) -> Mapping[str, Any]:
        snapshot = directory.snapshot()
        if snapshot is not current[0]:
            cache.clear()
            current[0] = snapshot
        found = cache.get(device_id)
        if found is None:
            found = cache[device_id] = context_fields(snapshot.context(device_id))
        return found

    return fields


def _install_reload(
    loop: asyncio.AbstractEventLoop,
    directory: RegistryDirectory,
    settings: Settings,
    alerts: AlertPipeline | None,
    dispatch: _DispatchServices | None,
    metrics: Metrics,
) -> None:
    """SIGHUP (systemd ExecReload) reloads rules, routing and registry; never stops the daemon."""
    pending: set[asyncio.Task[object]] = set()

    def on_hup() -> None:
        log.info("SIGHUP: reloading", extra={"what": "rules, routing, registry"})
        if alerts is not None:
            _reload_rules(settings, alerts, metrics)
        if dispatch is not None:
            _reload_policy(settings, dispatch.dispatcher, metrics)
        task = loop.create_task(directory.reload("sighup"), name="sensord.reload")
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)


def _reload_rules(settings: Settings, alerts: AlertPipeline, metrics: Metrics) -> None:
    directory = rules_directory(settings)
    rules = _refusing("rule", directory, load_rules, metrics.rule_reloads)
    if rules is not None:
        alerts.swap_rules(rules)  # between two batches: the loop runs one thing at a time
        log.info("rules reloaded", extra={"rules": len(rules.rules), "files": list(rules.sources)})


def _reload_policy(settings: Settings, dispatcher: Dispatcher, metrics: Metrics) -> None:
    policy = _refusing("routing", policy_file(settings), load_policy, metrics.policy_reloads)
    if policy is not None:
        dispatcher.policy = policy  # new orders only: running ones keep their SLA
        log.info("routing policy reloaded", extra={"routes": len(policy.routes)})


def _refusing(what: str, path: Path, load: Callable[[Path], T], counter: Counter) -> T | None:
    """Load for a reload; a failure is logged and counted and leaves the running set."""
    try:
        loaded = load(path)
    except Exception as exc:  # a signal handler is a loop boundary: log, count, keep running
        counter.labels("error").inc()
        problems = exc.problems if isinstance(exc, RuleError) else [f"{type(exc).__name__}: {exc}"]
        log.error(
            f"{what} reload refused; the running {what} set stays",
            extra={"path": str(path), "problems": problems},
        )
        return None
    counter.labels("ok").inc()
    return loaded


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def on_stop(signum: int) -> None:
        if stop.is_set():
            # Unflushed messages are unacknowledged, so the broker still has them.
            log.error("second signal: exiting without flushing")
            os._exit(exits.FAILED)
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    # Until the registry is loaded there is nothing to reload; a HUP (systemctl
    # reload) must not end the process. _install_reload replaces this.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP during start-up: ignored"))
