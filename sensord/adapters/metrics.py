"""Every Prometheus metric sensord exports, declared in one place.

The registry is injected so each test gets a fresh one. Names follow the
Prometheus conventions: ``sensord_`` prefix, base units, ``_total`` counters,
and no per-device labels (the fleet is thousands of devices).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sensord import __version__
from sensord.config import MetricsConfig
from sensord.core.messages import DEAD_LETTER_REASONS

log = logging.getLogger("sensord.metrics")

_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
_RELOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _IngestSamples(Collector):
    """received_total and in_flight, sampled from the ingest buffer when scraped."""

    def __init__(self) -> None:
        self.received: Callable[[], float] = lambda: 0
        self.in_flight: Callable[[], float] = lambda: 0

    def collect(self) -> Iterable[Metric]:
        """The two samples, read now."""
        yield CounterMetricFamily(
            "sensord_ingest_received_messages",
            "Messages taken into the ingest pipeline.",
            value=self.received(),
        )
        yield GaugeMetricFamily(
            "sensord_ingest_in_flight_messages",
            "Messages received and not yet committed and acknowledged.",
            value=self.in_flight(),
        )


class Metrics:
    """The metric objects, bound to one registry."""

    def __init__(self, registry: CollectorRegistry, *, process: bool = True) -> None:
        self.registry = registry
        if process:
            ProcessCollector(registry=registry)
        info = Info("sensord_build", "Version of the running sensord.", registry=registry)
        info.info({"version": __version__})

        # Ingest. Identity (tested): received = stored + duplicates + dead_letters + in_flight.
        # received and in_flight are read from the ingest buffer at scrape time, so the
        # per-message path touches no metric object.
        self._ingest = _IngestSamples()
        registry.register(self._ingest)
        self.stored = Counter(
            "sensord_ingest_stored_readings",
            "Readings committed to the database.",
            registry=registry,
        )
        self.duplicates = Counter(
            "sensord_ingest_duplicate_readings",
            "Readings already stored (broker redelivery); dropped by the unique key.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "sensord_ingest_dead_letters",
            "Messages committed to the dead-letter table, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in (*DEAD_LETTER_REASONS, "storage_rejected"):
            self.dead_letters.labels(reason)
        self.refused = Counter(
            "sensord_ingest_refused_messages",
            "Messages left unacknowledged for the broker to redeliver, by reason.",
            ["reason"],
            registry=registry,
        )
        self.refused.labels("shutdown")
        self.capacity_waits = Counter(
            "sensord_ingest_capacity_waits",
            "Messages that waited for buffer space: the broker exceeded the in-flight window.",
            registry=registry,
        )
        self.batch_size = Histogram(
            "sensord_ingest_batch_messages",
            "Messages per committed batch.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "sensord_ingest_commit_duration_seconds",
            "Time to write and commit one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.lag_seconds = Histogram(
            "sensord_ingest_lag_seconds",
            "Device timestamp to commit, oldest reading of each batch.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.write_retries = Counter(
            "sensord_ingest_write_retries",
            "Batch writes retried after a transient database error.",
            registry=registry,
        )
        self.write_splits = Counter(
            "sensord_ingest_write_splits",
            "Halves of a batch written again to isolate rows the database refused.",
            registry=registry,
        )
        self.dead_letters_truncated = Counter(
            "sensord_ingest_truncated_dead_letters",
            "Dead letters that keep only a prefix of the payload (ingest.dead_letter_max_bytes).",
            ["reason"],
            registry=registry,
        )
        self.dead_letter_dropped_bytes = Counter(
            "sensord_ingest_dead_letter_dropped_bytes",
            "Payload bytes beyond the kept prefix of truncated dead letters.",
            registry=registry,
        )

        # Rules and alerts.
        self.rule_evaluations = Counter(
            "sensord_rules_evaluated_readings",
            "Readings run through the rule engine.",
            registry=registry,
        )
        self.alerts_fired = Counter(
            "sensord_alerts_fired",
            "Alerts opened or reopened, by category and severity.",
            ["category", "severity"],
            registry=registry,
        )
        self.alerts_cleared = Counter(
            "sensord_alerts_cleared",
            "Alerts cleared by their clear condition, by category.",
            ["category"],
            registry=registry,
        )
        self.rule_reloads = Counter(
            "sensord_rules_reloads",
            "Rule set reloads (SIGHUP), by result; a failed reload keeps the running set.",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "error"):
            self.rule_reloads.labels(result)

        # Database and broker.
        self.database_errors = Counter(
            "sensord_database_errors",
            "Database operations that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            "sensord_mqtt_connected", "1 while the broker session is up.", registry=registry
        )
        self.mqtt_read_pauses = Counter(
            "sensord_mqtt_read_pauses",
            "Times reading from the broker was paused because the ingest buffer was full.",
            registry=registry,
        )
        self.mqtt_reading_paused = Gauge(
            "sensord_mqtt_reading_paused",
            "1 while reading from the broker is paused.",
            registry=registry,
        )
        self.mqtt_connects = Counter(
            "sensord_mqtt_connects", "Broker sessions established.", registry=registry
        )
        self.mqtt_disconnects = Counter(
            "sensord_mqtt_disconnects", "Broker sessions lost or closed.", registry=registry
        )

        # Device directory (the registry snapshot).
        self.registry_devices = Gauge(
            "sensord_registry_devices", "Devices in the in-memory directory.", registry=registry
        )
        self.registry_reloads = Counter(
            "sensord_registry_reloads",
            "Reloads of the in-memory directory, by result.",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "error"):
            self.registry_reloads.labels(result)
        self.registry_reload_seconds = Histogram(
            "sensord_registry_reload_duration_seconds",
            "Time to read the registry and build a new snapshot, successful reloads.",
            buckets=_RELOAD_BUCKETS,
            registry=registry,
        )

        # Retention.
        self.retention_runs = Counter(
            "sensord_retention_runs",
            "Retention job runs, by result.",
            ["result"],
            registry=registry,
        )
        self.retention_chunks_dropped = Counter(
            "sensord_retention_chunks_dropped",
            "Hypertable chunks dropped by retention.",
            registry=registry,
        )
        self.retention_dead_letters_deleted = Counter(
            "sensord_retention_dead_letters_deleted",
            "Dead letters deleted by retention.",
            registry=registry,
        )

        self._dispatch(registry)
        self.event_loop_lag = Histogram(
            "sensord_event_loop_lag_seconds",
            "How late a periodic 0.5 s timer on the event loop fires.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

    def _dispatch(self, registry: CollectorRegistry) -> None:
        """Work orders, their deadlines, the outbox and inbound commands."""
        self.orders = Gauge(
            "sensord_orders",
            "Work orders by state (sampled by the deadline auditor).",
            ["state"],
            registry=registry,
        )
        self.orders_created = Counter(
            "sensord_orders_created",
            "Work orders created, by category and severity.",
            ["category", "severity"],
            registry=registry,
        )
        self.order_transitions = Counter(
            "sensord_order_transitions",
            "Work-order transitions made by this instance's dispatcher and commands, by event.",
            ["event"],
            registry=registry,
        )
        self.order_sla_breaches = Counter(
            "sensord_order_sla_breaches",
            "Deadlines missed (each one escalates the order), by phase.",
            ["phase"],
            registry=registry,
        )
        for phase in ("ack", "arrive", "resolve"):
            self.order_sla_breaches.labels(phase)
        self.order_escalations = Counter(
            "sensord_order_escalations",
            "Escalations up the grid chain, by the level reached.",
            ["level"],
            registry=registry,
        )
        self.order_escalation_delay = Histogram(
            "sensord_order_escalation_delay_seconds",
            "How long after its deadline an order was escalated.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.order_deadlines_overdue = Gauge(
            "sensord_order_deadlines_overdue",
            "Deadlines overdue beyond the audit grace period without escalation (must be 0).",
            registry=registry,
        )
        self.order_deadline_audits = Counter(
            "sensord_order_deadline_audits", "Runs of the deadline auditor.", registry=registry
        )
        self.outbox_pending = Gauge(
            "sensord_outbox_pending_messages",
            "Notifications in the outbox not yet delivered.",
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "sensord_outbox_oldest_age_seconds",
            "Age of the oldest undelivered notification (0 when none).",
            registry=registry,
        )
        self.notifications_sent = Counter(
            "sensord_notifications_sent",
            "Notifications delivered, by channel.",
            ["channel"],
            registry=registry,
        )
        self.notification_failures = Counter(
            "sensord_notification_failures",
            "Failed notification delivery attempts (retried with backoff), by channel.",
            ["channel"],
            registry=registry,
        )
        for channel in ("mqtt", "webhook"):
            self.notifications_sent.labels(channel)
            self.notification_failures.labels(channel)
        self.loop_errors = Counter(
            "sensord_loop_errors",
            "Unexpected errors in a background loop (a bug; the loop retries), by loop.",
            ["loop"],
            registry=registry,
        )
        for loop in ("dispatch", "outbox"):
            self.loop_errors.labels(loop)
        self.policy_reloads = Counter(
            "sensord_dispatch_policy_reloads",
            "Reloads of the dispatch policy (routing.toml) on SIGHUP, by result.",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "error"):
            self.policy_reloads.labels(result)
        self.order_commands = Counter(
            "sensord_order_commands",
            "Inbound order commands from the broker, by result.",
            ["result"],
            registry=registry,
        )
        for result in ("accepted", "rejected"):
            self.order_commands.labels(result)
        self.order_command_refusals = Counter(
            "sensord_order_command_refusals",
            "Order commands refused for their actor (reason: by_not_sender, outside_app_org,"
            " safety_cancel, unknown_staff).",
            ["reason"],
            registry=registry,
        )
        for reason in ("by_not_sender", "outside_app_org", "safety_cancel", "unknown_staff"):
            self.order_command_refusals.labels(reason)

    def sample_ingest(self, received: Callable[[], float], in_flight: Callable[[], float]) -> None:
        """Where the scrape reads received_total and in_flight from."""
        self._ingest.received = received
        self._ingest.in_flight = in_flight


def serve_metrics(config: MetricsConfig, registry: CollectorRegistry) -> WSGIServer | None:
    """Start the /metrics endpoint in its own thread; None when disabled."""
    if not config.enabled:
        return None
    server, _thread = start_http_server(config.port, config.host, registry=registry)
    log.info("metrics endpoint up", extra={"address": f"{config.host}:{server.server_port}"})
    return server


async def watch_loop_lag(metrics: Metrics, interval_s: float = 0.5) -> None:
    """How late a timer fires: what every handler on the loop waits on top of its own work."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.event_loop_lag.observe(max(loop.time() - due, 0.0))
