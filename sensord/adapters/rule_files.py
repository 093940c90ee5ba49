"""Reads the rule directory; validation itself is the pure sensord.core.rules.model."""

from __future__ import annotations

from pathlib import Path

from sensord.core.orders.policy import Policy, parse_policy
from sensord.core.rules.model import RuleSet, parse_rules
from sensord.errors import RuleError

NOT_RULES = {"routing.toml"}  # the dispatcher's routing policy lives beside the rules


def load_rules(directory: Path) -> RuleSet:
    """Validate every rule file in ``directory``; raise RuleError listing all problems."""
    files = sorted(p for p in directory.glob("*.toml") if p.name not in NOT_RULES)
    return parse_rules((path.name, path.read_text(encoding="utf-8")) for path in files)


def load_policy(path: Path) -> Policy:
    """Validate the dispatch policy file; raise RuleError listing all problems."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(
            [
                f"{path.name}: {exc.strerror}: the dispatch policy; copy the shipped"
                " rules/routing.toml there, set [dispatch] policy_file,"
                " or set [dispatch] enabled = false"
            ]
        ) from None
    return parse_policy(text, path.name)
