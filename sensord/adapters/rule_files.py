"""Reads the rule directory; validation itself is the pure sensord.core.rules.model."""

from __future__ import annotations

from pathlib import Path

from sensord.core.rules.model import RuleSet, parse_rules

NOT_RULES = {"routing.toml"}  # the dispatcher's routing policy lives beside the rules


def load_rules(directory: Path) -> RuleSet:
    """Validate every rule file in ``directory``; raise RuleError listing all problems."""
    files = sorted(p for p in directory.glob("*.toml") if p.name not in NOT_RULES)
    return parse_rules((path.name, path.read_text(encoding="utf-8")) for path in files)
