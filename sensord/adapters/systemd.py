"""sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET (a no-op outside systemd)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("sensord.systemd")


class Notifier:
    """Sends READY=1, STOPPING=1, WATCHDOG=1 and STATUS= to systemd when it is listening."""

    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return bool(self._address)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines; False when there is no socket or it refused."""
        if not self._address:
            return False
        address = self._address
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall("\n".join(assignments).encode())
        except OSError:
            return False
        return True

    def watchdog_interval_s(self) -> float | None:
        """Half of systemd's WatchdogSec, when the watchdog is on for this process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000


async def watchdog(
    notifier: Notifier,
    wedged: Callable[[], Sequence[str]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Ping systemd only while the loops are healthy: a wedged writer stops the pings."""
    interval = notifier.watchdog_interval_s() or 10.0
    while True:
        stuck = wedged()
        if stuck:
            log.error(
                "writer wedged; withholding the watchdog ping", extra={"writers": list(stuck)}
            )
        else:
            notifier.send("WATCHDOG=1")
        await sleep(interval)
