"""The dispatch policy file (``rules/routing.toml``): routes, SLAs, escalation (pure).

``[[route]]`` decides owner and notified roles (sensord.core.orders.routing);
``[[sla]]`` gives deadlines per category and severity (first match wins, the
last entry must match everything); ``[orders]`` holds the reopen window, the
default telemetry hold and the escalation chain. Validation is all-or-nothing:
a bad file raises RuleError listing every problem and the running policy stays.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sensord.core.orders.routing import GRID_WORKER, Route
from sensord.core.rules.model import Category, Severity
from sensord.errors import RuleError

PositiveSeconds = Annotated[int, Field(gt=0)]
M = TypeVar("M", bound=BaseModel)
DEFAULT_CHAIN = (GRID_WORKER, "residents_committee", "ops_centre", "district_office")


class Sla(BaseModel):
    """Deadlines, counted from dispatch, for orders of a category and severity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Category | None = None  # None: any
    severity: Severity | None = None
    ack_s: PositiveSeconds
    arrive_s: PositiveSeconds
    resolve_s: PositiveSeconds
    verify_hold_s: Annotated[int, Field(ge=0)] | None = None  # None: [orders] default

    def matches(self, category: str, severity: str) -> bool:
        """Whether this SLA applies to an order of ``category`` and ``severity``."""
        return self.category in (None, category) and self.severity in (None, severity)


class OrderSettings(BaseModel):
    """The ``[orders]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reopen_window_s: Annotated[int, Field(ge=0)] = 86_400
    verify_hold_s: Annotated[int, Field(ge=0)] = 300
    escalation: tuple[str, ...] = DEFAULT_CHAIN

    @field_validator("escalation")
    @classmethod
    def _chain(cls, chain: tuple[str, ...]) -> tuple[str, ...]:
        if len(chain) < 2 or len(set(chain)) != len(chain):
            raise ValueError("escalation needs at least two distinct roles")
        return chain


@dataclass(frozen=True, slots=True)
class Deadlines:
    """An order's SLA, fixed when it is created."""

    ack_s: int
    arrive_s: int
    resolve_s: int
    verify_hold_s: int


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy file."""

    routes: tuple[Route, ...]
    slas: tuple[Sla, ...]
    orders: OrderSettings

    def deadlines(self, category: str, severity: str) -> Deadlines:
        """The SLA of a new order (the catch-all entry guarantees a match)."""
        sla = next(s for s in self.slas if s.matches(category, severity))
        hold = self.orders.verify_hold_s if sla.verify_hold_s is None else sla.verify_hold_s
        return Deadlines(sla.ack_s, sla.arrive_s, sla.resolve_s, hold)


def parse_policy(text: str, source: str = "routing.toml") -> Policy:
    """Validate the policy file; raise RuleError listing every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError([f"{source}: TOML syntax: {exc}"]) from None
    problems: list[str] = []
    raw_routes = _tables(document, "route", source, problems)
    raw_slas = _tables(document, "sla", source, problems)
    routes = _entries(Route, raw_routes, f"{source}: route", problems)
    slas = _entries(Sla, raw_slas, f"{source}: sla", problems)
    orders = _entries(OrderSettings, [document.get("orders", {})], f"{source}: [orders]", problems)
    if not raw_slas:
        problems.append(f"{source}: at least one [[sla]] is required")
    elif {"category", "severity"} & set(raw_slas[-1]):
        problems.append(f"{source}: the last [[sla]] must match every order (no category/severity)")
    unknown = set(document) - {"route", "sla", "orders"}
    problems += [f"{source}: unknown table {name!r}" for name in sorted(unknown)]
    if problems:
        raise RuleError(problems)
    return Policy(tuple(routes), tuple(slas), orders[0])


def _tables(
    document: dict[str, Any], name: str, source: str, problems: list[str]
) -> list[dict[str, Any]]:
    raw = document.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        problems.append(f"{source}: {name} must be an array of tables ([[{name}]])")
        return []
    return raw


def _entries(model: type[M], raw: list[Any], where: str, problems: list[str]) -> list[M]:
    parsed = []
    for index, entry in enumerate(raw):
        label = where if where.endswith("]") else f"{where} #{index + 1}"
        try:
            parsed.append(model.model_validate(entry))
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(p) for p in error["loc"])
                problems.append(f"{label}: {field}: {error['msg']}")
    return parsed
