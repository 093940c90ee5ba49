"""Inbound topics: order commands to the command handler, everything else to ingest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sensord.core.orders.commands import parse_command_topic
from sensord.core.orders.notices import is_notification
from sensord.services.order_actions import CommandHandler

Handler = Callable[[str, bytes], Awaitable[None]]


def router(prefix: str, readings: Handler, commands: CommandHandler | None) -> Handler:
    """The consumer's handler: order commands to ``commands``, readings to ``readings``."""

    async def handle(topic: str, payload: bytes) -> None:
        if is_notification(topic, prefix):
            return  # our own notification echoed back by <prefix>/+/+/+: acknowledged, not data
        where = parse_command_topic(topic, prefix) if commands else None
        if where is None or commands is None:
            await readings(topic, payload)
        else:
            await commands.handle(where, payload)

    return handle
