"""Simulated people answering work orders over MQTT, as a field app would.

Each organisation listens on ``<prefix>/<street>/dispatch/<org_id>``; when an
order is handed to it (dispatched, reopened or escalated to it as owner), one of
its staff acknowledges, arrives and resolves it through the command topic
``<prefix>/<street>/orders/<id>/events/staff.<by>``, a few seconds apart. Orders of a
category in ``ignore`` are left unanswered by their first owner: they escalate,
and the party they escalate to answers.
"""

from __future__ import annotations

import csv
import heapq
import json
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

STEPS = ("ack", "arrive", "resolve")
_TAKES_OVER = {"order.dispatch", "order.escalate"}


def staff_by_org(district: Path) -> dict[str, str]:
    """The first member of staff of every organisation, from the registry's staff.csv."""
    first: dict[str, str] = {}
    with (district / "staff.csv").open(encoding="utf-8") as rows:
        for row in csv.DictReader(rows):
            first.setdefault(row["org_id"], row["staff_id"])
    return first


class Responders:
    """Answers owned orders after ``delay_s`` per step; use as a context manager."""

    def __init__(
        self,
        port: int,
        staff: dict[str, str],
        *,
        ignore: Iterable[str] = (),
        delay_s: float = 1.0,
        prefix: str = "sensord/v1",
    ) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"responders-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._port, self._prefix = port, prefix
        self._staff, self._ignore, self._delay = staff, set(ignore), delay_s
        self._due: list[tuple[float, int, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, daemon=True)
        self.sent: list[tuple[int, str, str]] = []  # (order id, event, by)
        self._client.on_message = self._on_message

    def __enter__(self) -> Responders:
        self._client.connect("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        self._client.subscribe(f"{self._prefix}/+/dispatch/#", qos=1)
        self._worker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._worker.join(5)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        notice = json.loads(message.payload)
        recipient, order = notice["recipient"], notice["order"]
        if notice["type"] not in _TAKES_OVER or recipient["as"] != "owner":
            return
        org = recipient["org_id"]
        by = self._staff.get(org)
        if by is None or (order["category"] in self._ignore and not order["escalation_level"]):
            return
        # Work from where the order is: an escalated order may already be acknowledged.
        remaining = STEPS[_done(order["state"]) :]
        with self._lock:
            start = time.monotonic()
            for n, event in enumerate(remaining, 1):
                heapq.heappush(
                    self._due, (start + n * self._delay, order["id"], event, {**order, "by": by})
                )

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ready = []
                while self._due and self._due[0][0] <= time.monotonic():
                    ready.append(heapq.heappop(self._due))
            for _, order_id, event, order in ready:
                body = {"event": event, "by": order["by"], "request_id": uuid.uuid4().hex}
                # As the member of staff themselves: the topic's last segment is the sender,
                # which the generated broker ACL binds to the connection's username.
                topic = (
                    f"{self._prefix}/{order['street_id']}/orders/{order_id}/events/"
                    f"staff.{order['by']}"
                )
                self._client.publish(topic, json.dumps(body), qos=1)
                self.sent.append((order_id, event, order["by"]))
            time.sleep(0.05)


def _done(state: str) -> int:
    return {"acknowledged": 1, "on_site": 2}.get(state, 0)
