"""People acting on orders: the CLI and the MQTT command topic share one path.

``act`` applies an event in the caller's transaction: a verification closes
the order at once, a reopen dispatches it again at once. ``CommandHandler``
serves ``<prefix>/<street>/orders/<id>/events/<principal>``: it checks ``by``
against the authenticated principal (the topic segment the broker's ACL binds to the
sender), authorises it against the registry and the order, applies the command and
queues the reply in the outbox, and returns only after the commit — the broker's PUBACK
follows, so a crash before it redelivers the command, which ``request_id`` makes harmless.

The statements are named queries in the adapters; ``find_actor`` (the registry's
staff lookup) is re-exported here for the CLI.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncCursor
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.metrics import Metrics
from sensord.adapters.order_queries import (
    OrderRow,
    alert_is_safety,
    find_actor,
    load_order,
    request_seen,
)
from sensord.adapters.order_store import Changes, Outlets, advance
from sensord.adapters.outbox_store import Queued, enqueue
from sensord.clock import Clock
from sensord.core.orders.commands import (
    CommandRejected,
    CommandTopic,
    authorise,
    check_sender,
    parse_command,
)
from sensord.core.orders.machine import Event, TransitionError
from sensord.core.orders.notices import reply_topic
from sensord.errors import SensordError, StorageUnavailable

__all__ = ["CommandHandler", "OrderNotFound", "act", "find_actor"]

log = logging.getLogger("sensord.orders")


class OrderNotFound(SensordError):
    """No order with that id."""


async def act(
    cur: AsyncCursor[Any],
    order_id: int,
    event: Event,
    *,
    by: str,
    role: str,
    note: str,
    now: datetime,
    outlets: Outlets,
    changes: Changes,
) -> OrderRow:
    """Apply a person's ``event`` to an order by id (the CLI); TransitionError names the
    state and the allowed events."""
    order = await load_order(cur, order_id, lock=True)
    if order is None:
        raise OrderNotFound(f"order {order_id} does not exist")
    return await advance(
        cur, order, event, at=now, actor=by, role=role, note=note,
        outlets=outlets, changes=changes,
    )  # fmt: skip


class CommandHandler:
    """Applies commands from the broker; every command gets a reply, none is lost."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        outlets: Outlets,
        clock: Clock,
        metrics: Metrics,
        on_notices: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._outlets = outlets
        self._clock = clock
        self._metrics = metrics
        self._on_notices = on_notices

    async def handle(self, where: CommandTopic, payload: bytes) -> None:
        """Apply one command and queue its reply; raise StorageUnavailable to stay unacked."""
        try:
            result = await self._apply(where, payload)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"command not applied: {exc}") from exc
        self._metrics.order_commands.labels("accepted" if result["ok"] else "rejected").inc()
        self._on_notices()

    async def _apply(self, where: CommandTopic, payload: bytes) -> dict[str, Any]:
        now = self._clock.now()
        request_id = ""
        try:
            command = parse_command(payload)
            request_id = command.request_id
            event = Event(command.event)
            changes = Changes()
            async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                order = await load_order(cur, where.order_id, lock=True)
                if order is None or (order.street_id or "unknown") != where.street:
                    raise CommandRejected("not_found", f"order {where.order_id} does not exist")
                actor = await find_actor(cur, command.by)
                check_sender(where.principal, command.by, actor)  # before anything is answered
                # Checked under the order's lock: a redelivery racing its first copy on
                # another instance sees the first one's commit. Keyed on the sender too, so
                # another party's request id can neither be answered nor swallowed.
                if request_id and await request_seen(
                    cur, where.order_id, request_id, command.by
                ):
                    return {"ok": True, "duplicate": True}  # its reply was queued the first time
                parties = {p["org_id"] for p in order.notified if p.get("org_id")}
                authorise(
                    event, actor, order.owner_org, parties, order.category,
                    safety=await alert_is_safety(cur, order.alert_id),
                )  # fmt: skip
                assert actor is not None
                updated = await advance(
                    cur, order, event, at=now, actor=actor.staff_id, role=actor.role,
                    note=command.note, outlets=self._outlets, changes=changes,
                    detail={"request_id": request_id, "via": "mqtt"},
                )  # fmt: skip
                reply = {"ok": True, "state": updated.state}
                await self._reply(cur, where, request_id, now, reply)
            log.info(
                "order command applied",
                extra={"order_id": where.order_id, "event": event.value, "by": actor.staff_id},
            )
            return reply
        except (CommandRejected, TransitionError, psycopg.DataError) as exc:
            code = (
                exc.code
                if isinstance(exc, CommandRejected)
                else "invalid_transition"
                if isinstance(exc, TransitionError)
                else "invalid"  # the database refused a value (a safety net behind the model)
            )
            if isinstance(exc, CommandRejected) and not request_id:
                request_id = exc.request_id
            if isinstance(exc, CommandRejected) and exc.refusal:
                self._metrics.order_command_refusals.labels(exc.refusal).inc()
            reply = {"ok": False, "error": code, "message": str(exc)}
            async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await self._reply(cur, where, request_id, now, reply)
            log.warning(
                "order command rejected",
                extra={
                    "order_id": where.order_id,
                    "error": code,
                    "reason": str(exc),
                    "principal": where.principal,
                },
            )
            return reply

    async def _reply(
        self,
        cur: AsyncCursor[Any],
        where: CommandTopic,
        request_id: str,
        now: datetime,
        body: dict[str, Any],
    ) -> None:
        # Keyed by the request: a redelivered command does not queue a second
        # reply. Without a request id every command gets its own reply.
        key = f"reply-{where.order_id}-{request_id or uuid.uuid4().hex}"
        message = {"v": 1, "order_id": where.order_id, "request_id": request_id, **body}
        topic = reply_topic(self._outlets.prefix, where.street, where.order_id)
        order_id = where.order_id if body.get("error") != "not_found" else None
        await enqueue(cur, [Queued(order_id, "mqtt", topic, json.dumps(message), key, now)])
