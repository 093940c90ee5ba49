"""Structured logging: one event per line on stderr, JSON or key=value, journald-friendly.

JSON (the default): one object per line, ``{"ts", "level", "logger", "msg",
<fields>}``; fields passed with ``extra={...}`` become fields of the event
(ids such as device_id, alert_id, order_id; never personal data). A traceback
is one field, ``exc`` (``stack`` for ``stack_info``), so an event never spans
lines. Control characters never reach the terminal or the journal raw: JSON
escapes them, and so does the text format (for a terminal; it prints a
traceback on the lines after the event).

journald: when stderr is the journal (``JOURNAL_STREAM`` names it), each line
starts with a syslog priority prefix (``<3>`` for error …), which journald
strips and stores as PRIORITY, so ``journalctl -p warning`` works; the JSON
itself is unchanged and keeps ``ts`` (the event's time to the millisecond,
for whatever ships ``MESSAGE`` onwards; ``journalctl -o cat`` shows bare JSON).

Redaction is a safety net, not the policy (the policy is: ids only; the log
is a recipient of docs/security.md's "Disclosure"). The handler's
:class:`Redactor` filter rewrites every event before it is formatted: the
value of a field whose name says secret (password, secret, token, api key,
credential, authorization, cookie) or personal data (a name, contacts, tags or
a place's label, ``core/privacy.PERSONAL_FIELDS``, also as the end of a name:
``resident_name``), at any depth, becomes ``***`` (a phone field's value is
masked like a phone); in every
string (message, fields, traceback) a URL's or a connection string's password
becomes ``***``, and a mobile number (``1`` and ten digits, which covers
``1[3-9]`` and the registry's own) or a landline in the registry's format
(``0AA(A)-NNNNNNN(N)``) is masked like ``sensord registry show`` masks it.
Names cannot be recognised; they must never be logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sensord.core.privacy import PERSONAL_FIELDS, mask_phone

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
MASK = "***"

_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api_?key|credential|authori[sz]ation|cookie|private_?key",
    re.IGNORECASE,
)
_PERSONAL_KEY = re.compile(rf"(^|_)({'|'.join(PERSONAL_FIELDS)})$", re.IGNORECASE)
# scheme://user:PASSWORD@host and password=PASSWORD (libpq key=value, query strings, JSON)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@]*@")
_KEY_PASSWORD = re.compile(
    r"""((?:password|passwd|secret|token)["']?\s*[=:]\s*["']?)[^\s"',;&]+""", re.IGNORECASE
)
_PHONE = re.compile(r"(?<![0-9])(?:1[0-9]{10}|0[0-9]{2,3}-[0-9]{7,8})(?![0-9])")
# C0 (JSON escapes those itself), DEL, C1 (0x9b is a one-byte CSI) and the Unicode line breaks.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029]")
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def redact_text(text: str) -> str:
    """``text`` with passwords in URLs and key=value pairs, and phone numbers, masked."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _KEY_PASSWORD.sub(rf"\1{MASK}", text)
    return _PHONE.sub(lambda match: mask_phone(match.group()), text)


def redact_value(key: str, value: Any) -> Any:
    """A field's value made safe to log: masked whole when ``key`` names a secret or
    personal data."""
    if _PERSONAL_KEY.search(key) and key.lower().endswith("phone") and isinstance(value, str):
        return mask_phone(value)  # as `registry show` shows it, whatever its format
    if _SECRET_KEY.search(key) or _PERSONAL_KEY.search(key):
        return MASK if value not in (None, "") else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(key, item) for item in value]
    return redact_text(str(value))


class Redactor(logging.Filter):
    """Masks secrets and phone numbers in every event; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place: message, fields, traceback and stack."""
        try:
            message = record.getMessage()
        except Exception:  # bad %-arguments: log what we have rather than raise at the caller
            message = f"{record.msg} [unformattable arguments]"
        record.msg, record.args = redact_text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in _fields(record).items():
            setattr(record, key, redact_value(key, value))
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    return formatter.formatException(record.exc_info) if record.exc_info else None


class JsonFormatter(logging.Formatter):
    """``{"ts":…,"level":…,"logger":…,"msg":…, <fields>}`` per line."""

    def __init__(self, priority_prefix: bool = False) -> None:
        super().__init__()
        self._priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one JSON line."""
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            event[f"extra_{key}" if key in event else key] = value
        if (traceback := _traceback(self, record)) is not None:
            event["exc"] = traceback
        if record.stack_info:
            event["stack"] = record.stack_info
        line = json.dumps(event, ensure_ascii=False, default=str)
        line = _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", line)
        return _prefixed(record, line) if self._priority_prefix else line


class TextFormatter(logging.Formatter):
    """``LEVEL logger: msg key=value …`` per line, for a terminal."""

    def __init__(self, priority_prefix: bool = False) -> None:
        super().__init__()
        self._priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one human-readable line (a traceback follows it)."""
        fields = " ".join(
            f"{key}={_printable(str(value))}" for key, value in _fields(record).items()
        )
        line = f"{record.levelname:<7} {record.name}: {_printable(record.getMessage())}"
        if fields:
            line += " " + fields
        if self._priority_prefix:
            line = _prefixed(record, line)
        if (traceback := _traceback(self, record)) is not None:
            line += "\n" + "\n".join(_printable(part) for part in traceback.splitlines())
        return line


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)


def _prefixed(record: logging.LogRecord, line: str) -> str:
    return f"<{_PRIORITY.get(record.levelname, 6)}>{line}"


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to journald (``JOURNAL_STREAM`` is its dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return stream == f"{stat.st_dev}:{stat.st_ino}"


def configure(level: str, fmt: str) -> None:
    """Send every sensord log event to stderr in the chosen format, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal()
    handler.setFormatter(JsonFormatter(journal) if fmt == "json" else TextFormatter(journal))
    handler.addFilter(Redactor())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # gmqtt logs every reconnect attempt at warning with tracebacks, and every packet
    # (payloads included) at debug; ours say what matters once.
    for chatty in ("gmqtt", "sensord.mqtt.gmqtt", "sensord.mqtt.publisher.gmqtt"):
        logging.getLogger(chatty).setLevel(max(logging.getLevelName(level), logging.ERROR))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
