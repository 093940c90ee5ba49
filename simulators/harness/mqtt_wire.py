"""MQTT v5 on the wire, written by hand: packet encoders and decoders, a blocking raw client.

The publishers and probes need a client that does exactly what it is told (no library-side
window, never an automatic PUBACK); tests and benchmarks share this one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
import time
from typing import Any

HOST = "127.0.0.1"
SUB_FILTER = "sensord/v1/+/+/+"

PUBLISH, PUBACK, CONNACK, SUBACK, DISCONNECT = 0x30, 0x40, 0x20, 0x90, 0xE0
DISCONNECT_PKT = b"\xe0\x00"

# property id -> wire type (1, 2, 4 byte ints; "vbi"; "str"; "bin"; "pair")
_PROP_TYPES: dict[int, Any] = {
    0x01: 1, 0x02: 4, 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "vbi", 0x11: 4,
    0x12: "str", 0x13: 2, 0x15: "str", 0x16: "bin", 0x17: 1, 0x19: 1, 0x1A: "str",
    0x1C: "str", 0x1F: "str", 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "pair",
    0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}
PROP_NAMES = {
    0x11: "session_expiry", 0x21: "receive_maximum", 0x22: "topic_alias_max",
    0x24: "max_qos", 0x25: "retain_available", 0x27: "max_packet_size",
    0x28: "wildcard_sub", 0x29: "sub_id", 0x2A: "shared_sub", 0x13: "server_keepalive",
    0x12: "assigned_client_id", 0x1F: "reason_string",
}


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        n, b = divmod(n, 128)
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def read_vbi(buf: bytes | bytearray, i: int) -> tuple[int, int] | None:
    """(value, next index) or None if incomplete."""
    mult, val = 1, 0
    for _ in range(4):
        if i >= len(buf):
            return None
        b = buf[i]
        i += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, i
        mult *= 128
    raise ValueError("malformed variable byte integer")


def _s(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def parse_props(b: bytes) -> dict[str, Any]:
    ln, i = read_vbi(b, 0)  # type: ignore[misc]
    end = i + ln
    out: dict[str, Any] = {}
    while i < end:
        pid = b[i]
        i += 1
        kind = _PROP_TYPES[pid]
        if kind in (1, 2, 4):
            val: Any = int.from_bytes(b[i : i + kind], "big")
            i += kind
        elif kind == "vbi":
            val, i = read_vbi(b, i)  # type: ignore[misc]
        elif kind == "pair":
            k = b[i + 2 : i + 2 + int.from_bytes(b[i : i + 2], "big")]
            i += 2 + len(k)
            v = b[i + 2 : i + 2 + int.from_bytes(b[i : i + 2], "big")]
            i += 2 + len(v)
            val = (k.decode(), v.decode())
        else:
            n = int.from_bytes(b[i : i + 2], "big")
            val = bytes(b[i + 2 : i + 2 + n])
            val = val.decode() if kind == "str" else val
            i += 2 + n
        out[PROP_NAMES.get(pid, hex(pid))] = val
    return out


def connect_packet(
    client_id: str,
    *,
    clean_start: bool = True,
    keepalive: int = 60,
    session_expiry: int = 0,
    receive_maximum: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    props = b""
    if session_expiry:
        props += b"\x11" + struct.pack("!I", session_expiry)
    if receive_maximum is not None:
        props += b"\x21" + struct.pack("!H", receive_maximum)
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = (
        _s(b"MQTT")
        + bytes([5, flags])
        + struct.pack("!H", keepalive)
        + _vbi(len(props))
        + props
        + _s(client_id.encode())
        + (_s(username.encode()) if username is not None else b"")
        + (_s(password.encode()) if password is not None else b"")
    )
    return b"\x10" + _vbi(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, mid: int, qos: int = 1) -> bytes:
    body = _s(topic) + (struct.pack("!H", mid) if qos else b"") + b"\x00" + payload
    return bytes([0x30 | (qos << 1)]) + _vbi(len(body)) + body


def subscribe_packet(mid: int, topic_filter: str, qos: int = 1) -> bytes:
    body = struct.pack("!H", mid) + b"\x00" + _s(topic_filter.encode()) + bytes([qos])
    return b"\x82" + _vbi(len(body)) + body


def puback_packet(mid: int, reason: int = 0) -> bytes:
    return b"\x40\x02" + struct.pack("!H", mid) if reason == 0 else (
        b"\x40\x03" + struct.pack("!HB", mid, reason)
    )


@dataclasses.dataclass
class InPublish:
    topic: str
    payload: bytes
    qos: int
    mid: int | None
    dup: bool


def parse_publish(flags: int, body: bytes) -> InPublish:
    tl = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + tl].decode()
    i = 2 + tl
    qos = (flags >> 1) & 3
    mid = None
    if qos:
        mid = int.from_bytes(body[i : i + 2], "big")
        i += 2
    pl, i = read_vbi(body, i)  # type: ignore[misc]
    return InPublish(topic, bytes(body[i + pl :]), qos, mid, bool(flags & 0x08))


class RawClient:
    """Blocking MQTT v5 client over a plain socket, for probes: it does exactly what it is told
    (in particular it never acknowledges anything on its own)."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        host: str = HOST,
        clean_start: bool = True,
        session_expiry: int = 0,
        receive_maximum: int | None = None,
        keepalive: int = 60,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self._mid = 0
        self.sock.sendall(
            connect_packet(
                client_id,
                clean_start=clean_start,
                keepalive=keepalive,
                session_expiry=session_expiry,
                receive_maximum=receive_maximum,
                username=username,
                password=password,
            )
        )
        ptype, _, body = self.read_packet(10)
        if ptype != CONNACK:
            raise ConnectionError(f"expected CONNACK, got {ptype:#x}")
        self.session_present = bool(body[0] & 1)
        self.reason = body[1]
        self.connack_props = parse_props(body[2:]) if len(body) > 2 else {}
        if self.reason:
            self.close()
            raise ConnectionError(f"CONNACK reason {self.reason:#x}")

    def next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    def _take(self) -> tuple[int, int, bytes] | None:
        if len(self.buf) < 2:
            return None
        r = read_vbi(self.buf, 1)
        if r is None:
            return None
        ln, i = r
        if len(self.buf) < i + ln:
            return None
        hdr = self.buf[0]
        body = bytes(self.buf[i : i + ln])
        del self.buf[: i + ln]
        return hdr & 0xF0, hdr & 0x0F, body

    def read_packet(self, timeout: float) -> tuple[int, int, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            p = self._take()
            if p is not None:
                return p
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 18)
            if not data:
                raise ConnectionError("connection closed by broker")
            self.buf += data

    def packets_until_quiet(self, quiet: float = 1.0, limit: float = 60.0) -> list[Any]:
        """Read packets until none arrives for ``quiet`` seconds; PUBLISHes are parsed."""
        out: list[Any] = []
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                ptype, flags, body = self.read_packet(quiet)
            except TimeoutError:
                break
            out.append(parse_publish(flags, body) if ptype == PUBLISH else (ptype, flags, body))
        return out

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        self.sock.sendall(subscribe_packet(self.next_mid(), topic_filter, qos))
        while True:
            ptype, _, body = self.read_packet(10)
            if ptype == SUBACK:
                return body[-1]  # reason code of the (single) filter
            if ptype == PUBLISH:  # a session resumed with messages: push back is not needed
                continue

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.sock.sendall(publish_packet(topic.encode(), payload, self.next_mid(), qos))

    def publish_acked(self, topic: str, payload: bytes, timeout: float = 10) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (0x87: not authorised)."""
        mid = self.next_mid()
        self.sock.sendall(publish_packet(topic.encode(), payload, mid, 1))
        while True:
            ptype, _, body = self.read_packet(timeout)
            if ptype == PUBACK and int.from_bytes(body[:2], "big") == mid:
                return body[2] if len(body) > 2 else 0

    def puback(self, mid: int, reason: int = 0) -> None:
        self.sock.sendall(puback_packet(mid, reason))

    def disconnect(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(DISCONNECT_PKT)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def create_session(
    port: int,
    client_id: str,
    *,
    host: str = HOST,
    topic_filter: str = SUB_FILTER,
    session_expiry: int = 3600,
) -> None:
    """Create a fresh persistent session (clean start, subscribe QoS 1, disconnect)."""
    c = RawClient(port, client_id, host=host, clean_start=True, session_expiry=session_expiry)
    rc = c.subscribe(topic_filter, 1)
    if rc != 1:
        raise RuntimeError(f"SUBACK reason {rc:#x} for {topic_filter}")
    c.disconnect()

def count_acks(buf: bytearray) -> tuple[int, int]:
    """Consume the complete packets at the head of ``buf``: (PUBACKs, PUBACKs with an error).

    Raises ConnectionError on a broker DISCONNECT.
    """
    acked = errors = 0
    i, n = 0, len(buf)
    while i + 2 <= n:
        b1 = buf[i + 1]
        if b1 < 128:
            rl, hl = b1, 2
        else:
            r2 = read_vbi(buf, i + 1)
            if r2 is None:
                break
            rl, j = r2
            hl = j - i
        if i + hl + rl > n:
            break
        t = buf[i] & 0xF0
        if t == PUBACK:
            acked += 1
            if rl >= 3 and buf[i + hl + 2] >= 0x80:
                errors += 1
        elif t == DISCONNECT:
            raise ConnectionError(f"broker DISCONNECT {bytes(buf[i:i + hl + rl])!r}")
        i += hl + rl
    del buf[:i]
    return acked, errors

