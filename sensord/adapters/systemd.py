"""sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET (a no-op outside systemd)."""

from __future__ import annotations

import os
import socket


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
