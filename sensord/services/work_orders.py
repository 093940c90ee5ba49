"""The work-order group: dispatcher, outbox relay and its publishers, inbound commands.

Built, started and stopped as one piece by the composition root.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.directory import RegistryDirectory
from sensord.adapters.metrics import Metrics
from sensord.adapters.mqtt_publisher import MqttPublisher
from sensord.adapters.order_store import Outlets
from sensord.adapters.rule_files import load_policy
from sensord.adapters.webhooks import WebhookSender
from sensord.clock import Clock
from sensord.config import Settings
from sensord.core.backoff import Backoff
from sensord.core.orders.commands import command_subscription
from sensord.paths import policy_file
from sensord.services.alerts import AlertPipeline
from sensord.services.dispatcher import Dispatcher
from sensord.services.order_actions import CommandHandler
from sensord.services.outbox import OutboxRelay

log = logging.getLogger("sensord.work_orders")


@dataclass
class WorkOrders:
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


def build_work_orders(
    settings: Settings,
    pool: AsyncConnectionPool,
    directory: RegistryDirectory,
    metrics: Metrics,
    clock: Clock,
    alerts: AlertPipeline | None,
) -> WorkOrders | None:
    """The group, wired to ``alerts``; None when dispatch is off.

    Raises RuleError when the dispatch policy is invalid: fatal at start-up.
    """
    config = settings.dispatch
    if not config.enabled:
        return None
    policy = load_policy(policy_file(settings))
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
    return WorkOrders(settings, dispatcher, relay, publisher, webhooks, commands)
