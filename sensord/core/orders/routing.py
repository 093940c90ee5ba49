"""Routing (``rules/routing.toml``): alert → owner and notified parties at a place (pure).

Roles resolve through the device's context: an organisation type is the most
specific organisation of that type answering for the device's kind at the
place; ``grid_worker`` is the staff member of that role covering the place's
most specific grid unit; ``maintainer`` is the device's maintainer. A route
whose owner does not resolve falls back to the street's city-operations
centre and is flagged ``unrouted`` — an alert is never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from sensord.core.context import DeviceContext
from sensord.core.rules.expr import Condition, compile_condition
from sensord.core.rules.model import Category, Severity
from sensord.errors import ExpressionError

GRID_WORKER = "grid_worker"
MAINTAINER = "maintainer"
FALLBACK = "ops_centre"


class Route(BaseModel):
    """One line of the policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    category: Category
    place_types: tuple[str, ...] = ()  # empty: any place
    when: Condition | None = None
    owner: str
    notify: tuple[str, ...] = ()
    severity: Severity | None = None  # raises the order's severity

    @field_validator("when", mode="before")
    @classmethod
    def _compile(cls, value: object) -> Condition | None:
        if value is None or isinstance(value, Condition):
            return value
        try:
            return compile_condition(str(value))
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None

    def matches(self, category: str, fields: Mapping[str, Any]) -> bool:
        """Whether this route applies to an alert of ``category`` at a place with ``fields``."""
        if category != self.category:
            return False
        if self.place_types and fields.get("place_type") not in self.place_types:
            return False
        return self.when is None or self.when(fields)


@dataclass(frozen=True, slots=True)
class Party:
    """Who a role resolved to: an organisation, possibly a member of its staff."""

    role: str
    org_id: str | None
    staff_id: str | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """The decision for one alert."""

    owner: Party
    notify: tuple[Party, ...]
    severity: str | None
    unrouted: bool  # the owner did not resolve; the ops centre got it


def route(
    routes: tuple[Route, ...],
    category: str,
    context: DeviceContext | None,
    fields: Mapping[str, Any],
) -> Routing:
    """Owner and notified parties for an alert of ``category`` on a device in ``context``."""
    chosen = next((r for r in routes if r.matches(category, fields)), None)
    owner_role = chosen.owner if chosen else FALLBACK
    owner = resolve(owner_role, context)
    unrouted = owner is None or chosen is None
    if owner is None:
        owner = resolve(FALLBACK, context) or Party(FALLBACK, None)
    notify = tuple(
        party
        for role in (chosen.notify if chosen else ())
        if (party := resolve(role, context)) is not None and party != owner
    )
    return Routing(owner, notify, chosen.severity if chosen else None, unrouted)


def resolve(role: str, context: DeviceContext | None) -> Party | None:
    """The concrete party a role means at the device's place, or None."""
    if context is None:
        return None
    if role == MAINTAINER:
        maintainer = context.device.maintainer
        return Party(role, maintainer.org_id) if maintainer else None
    if role == GRID_WORKER:
        workers = [s for s in context.staff if s.role == GRID_WORKER]
        if not workers:
            return None
        # Staff are ordered most specific cover first (sensord.core.context).
        return Party(role, workers[0].org_id, workers[0].staff_id)
    # Most specific scope first, exact category before "any" (sensord.core.context).
    for entry in context.responsible_for(context.device.kind):
        if entry.org.org_type == role:
            return Party(role, entry.org.org_id)
    return None
