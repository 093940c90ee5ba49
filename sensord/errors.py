"""The one error tree of sensord: everything it raises on purpose is a SensordError."""

from __future__ import annotations


class SensordError(Exception):
    """Base of every error sensord raises deliberately."""


class ConfigError(SensordError):
    """The configuration is invalid; carries the offending key paths."""


class PayloadError(SensordError):
    """A message cannot be stored as a reading; it becomes a dead letter.

    ``reason`` is a stable code (``docs/protocol.md``), ``detail`` says what
    exactly was wrong (the field, the value's problem), ``device_id`` is set
    when the topic named one.
    """

    def __init__(self, reason: str, detail: str = "", device_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.device_id = device_id


class CapacityError(SensordError):
    """A bounded buffer is full; the caller must not acknowledge the message."""


class MigrationError(SensordError):
    """A migration file is missing, changed after being applied, or failed."""

    def __init__(self, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


class ShutdownError(SensordError):
    """Work was abandoned because the daemon is stopping; nothing was acknowledged."""


class StorageUnavailable(SensordError):
    """The database cannot be reached or lost the connection; retry later."""


class StorageRejected(SensordError):
    """The database refused the data itself (a constraint or a value); retrying cannot help."""


class RuleError(SensordError):
    """A rule set or dispatch policy cannot be loaded; ``problems`` lists every
    ``file: rule: field: reason``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ExpressionError(SensordError):
    """A condition's text is not in the rule language; says where and why."""


class CellError(SensordError):
    """A cell's text is not a valid value; the message never repeats the text (may be personal)."""
