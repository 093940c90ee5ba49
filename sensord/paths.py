"""Where sensord's files are: the configured path, or the copy shipped with the package.

From a source checkout (or an editable install) the shipped copies are the
repository's ``migrations/``, ``rules/`` and ``config.toml``; a wheel installs
them as data files under ``<prefix>/share/sensord/``. This is the only module
that knows that layout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensord.config import Settings

_SOURCE_TREE = Path(__file__).resolve().parents[1]


def shipped(name: str) -> Path:
    """A file or directory shipped with the package: ``migrations``, ``rules``, ``config.toml``."""
    source = _SOURCE_TREE / name
    if source.exists():
        return source
    return Path(sys.prefix) / "share" / "sensord" / name


def configured_or_shipped(configured: str | None, name: str) -> Path:
    """``configured`` when set, else the shipped ``name``."""
    return Path(configured) if configured else shipped(name)


def migrations_directory(settings: Settings) -> Path:
    """The migration files: configured, or the shipped ``migrations/``."""
    return configured_or_shipped(settings.database.migrations_dir, "migrations")


def rules_directory(settings: Settings) -> Path:
    """The rule files: configured, or the shipped ``rules/``."""
    return configured_or_shipped(settings.rules.directory, "rules")


def policy_file(settings: Settings, rules: Path | None = None) -> Path:
    """The dispatch policy: configured, or ``routing.toml`` beside the rules (``rules``, or the
    configured rule directory)."""
    configured = settings.dispatch.policy_file
    if configured:
        return Path(configured)
    return (rules or rules_directory(settings)) / "routing.toml"
