"""Structured logging: one event per line on stderr, JSON or key=value, journald-friendly.

Fields passed with ``extra={...}`` become fields of the event. Personal data
never goes into ``extra`` (ids only).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """``{"ts":…,"level":…,"logger":…,"msg":…, <fields>}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one JSON line."""
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(_fields(record))
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``LEVEL logger: msg key=value …`` per line, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one human-readable line."""
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str, fmt: str) -> None:
    """Send every sensord log event to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # gmqtt logs every reconnect attempt at warning with tracebacks; ours say it once.
    logging.getLogger("sensord.mqtt.gmqtt").setLevel(
        max(logging.getLevelName(level), logging.ERROR)
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
