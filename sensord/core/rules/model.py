"""Rule files (``rules/*.toml``): their schema, validated with errors naming file, rule and field.

See docs/rules.md for the language. Loading is all-or-nothing: a set with one
bad file is refused whole, so a reload never half-applies.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sensord.core.registry.vocabulary import DEVICE_KINDS
from sensord.core.rules.expr import Condition, compile_condition
from sensord.core.topics import TOPIC_KINDS
from sensord.errors import ExpressionError, RuleError

Severity = Literal["info", "warning", "major", "critical"]
SEVERITY_ORDER: tuple[str, ...] = ("info", "warning", "major", "critical")


def higher_severity(current: str, candidate: str | None) -> str:
    """``candidate`` if it is more severe than ``current``, else ``current``."""
    if candidate is None or SEVERITY_ORDER.index(candidate) <= SEVERITY_ORDER.index(current):
        return current
    return candidate


CATEGORIES: tuple[str, ...] = (
    "fire",
    "ebike_indoor_charging",
    "repeat_offence",
    "elevator_entrapment",
    "elevator_fault",
    "fire_lane_blocked",
    "device_offline",
    "battery_low",
    "inspection_due",
    "firmware_outdated",
)


def _known_category(category: str) -> str:
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
    return category


Category = Annotated[str, AfterValidator(_known_category)]  # an alert category of CATEGORIES
Seconds = Annotated[float, Field(ge=0, le=366 * 86400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Escalation(_Strict):
    """Registry condition that raises severity (and the SLA class) for a subject."""

    when: Condition
    severity: Severity
    note: str = ""

    @field_validator("when", mode="before")
    @classmethod
    def _compile(cls, value: object) -> Condition:
        return _condition(value)


class Rule(_Strict):
    """One rule of any type; fields that a type does not use must be absent."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
    type: Literal["state", "absence", "count", "inspection"]
    kinds: tuple[str, ...]
    category: Category
    severity: Severity
    safety: bool = False
    description: str = ""
    # state
    when: Condition | None = None
    for_s: Seconds = 0
    clear: Condition | None = None
    clear_for_s: Seconds = 0
    hold_s: Seconds = 0
    cooldown_s: Seconds = 0
    # absence
    missed_heartbeats: Annotated[float, Field(gt=0, le=1000)] | None = None
    # inspection: the registry's next inspection date is within this many days (or past)
    within_days: Annotated[int, Field(ge=0, le=366)] | None = None
    # count: counts firings of `counts_category` per subject within `window_s`
    counts_category: str | None = None
    subject: Literal["device", "address", "household"] = "device"
    threshold: Annotated[int, Field(ge=2)] | None = None
    window_s: Seconds | None = None
    escalate: tuple[Escalation, ...] = ()

    @field_validator("when", "clear", mode="before")
    @classmethod
    def _compile(cls, value: object) -> Condition | None:
        return None if value is None else _condition(value)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(kinds) - set(TOPIC_KINDS))
        if unknown or not kinds:
            raise ValueError(
                f"kinds must be some of {', '.join(TOPIC_KINDS)}; got {unknown or 'none'}"
            )
        return kinds

    @model_validator(mode="after")
    def _fields_of_type(self) -> Rule:
        needed = {
            "state": ("when",),
            "absence": ("missed_heartbeats",),
            "inspection": ("within_days",),
            "count": ("counts_category", "threshold", "window_s"),
        }[self.type]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.type} rule needs {', '.join(missing)}")
        if self.type == "absence" and not set(self.kinds) <= set(DEVICE_KINDS) | {"heartbeat"}:
            raise ValueError("absence rules watch device kinds")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_clear(cls, data: object) -> object:
        # Without an explicit clear condition, a state rule clears when its
        # firing condition is known to be false (unknown does not clear).
        if isinstance(data, dict) and data.get("when") is not None and data.get("clear") is None:
            return {**data, "clear": f"not ({data['when']})"}
        return data

    def clears(self, fields: dict[str, object]) -> bool:
        """Whether the clear condition holds."""
        return self.clear is not None and self.clear(fields)


def _condition(value: object) -> Condition:
    if isinstance(value, Condition):
        return value
    if not isinstance(value, str):
        raise ValueError('a condition is a string, e.g. "obscuration >= 10 and smoke"')
    try:
        return compile_condition(value)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None


class _RuleFile(_Strict):
    rule: tuple[dict[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A validated set of rules, by name; swapped whole on reload."""

    rules: tuple[Rule, ...]
    sources: tuple[str, ...]

    def for_kind(self, kind: str) -> tuple[Rule, ...]:
        """The state rules that evaluate readings of this kind."""
        return tuple(r for r in self.rules if r.type == "state" and kind in r.kinds)


def parse_rules(files: Iterable[tuple[str, str]]) -> RuleSet:
    """(file name, text) pairs to a RuleSet; raise RuleError listing every problem."""
    problems: list[str] = []
    rules: list[Rule] = []
    names: dict[str, str] = {}
    sources: list[str] = []
    for file_name, text in files:
        sources.append(file_name)
        try:
            document = _RuleFile.model_validate(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{file_name}: TOML syntax: {exc}")
            continue
        except ValidationError as exc:
            problems.extend(f"{file_name}: {_where(e)}: {e['msg']}" for e in exc.errors())
            continue
        for index, raw in enumerate(document.rule):
            label = str(raw.get("name", f"rule #{index + 1}"))
            try:
                rule = Rule.model_validate(raw)
            except ValidationError as exc:
                problems.extend(
                    f"{file_name}: {label}: {_where(e)}: {e['msg']}" for e in exc.errors()
                )
                continue
            if rule.name in names:
                problems.append(
                    f"{file_name}: {rule.name}: name already used in {names[rule.name]}"
                )
                continue
            names[rule.name] = file_name
            rules.append(rule)
    counted = {r.counts_category for r in rules if r.counts_category}
    for category in sorted(counted - {r.category for r in rules}):
        problems.append(f"count rules count category {category!r}, which no rule raises")
    if problems:
        raise RuleError(problems)
    return RuleSet(tuple(rules), tuple(sources))


def _where(error: object) -> str:
    loc = error["loc"] if isinstance(error, dict) else ()
    return ".".join(str(part) for part in loc) or "<rule>"
