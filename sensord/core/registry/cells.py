"""One CSV cell: how its text becomes a value (or a :class:`CellError`), and back."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sensord.errors import CellError

Parser = Callable[[str], Any]


def _pattern(regex: str, hint: str) -> Parser:
    compiled = re.compile(regex)

    def parse(text: str) -> str:
        if not compiled.fullmatch(text):
            raise CellError(f"must be {hint}")
        return text

    return parse


ident = _pattern(r"[A-Za-z0-9_.-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ . -")
street = _pattern(r"[A-Za-z0-9_-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ -")
phone = _pattern(
    r"1[0-9]{10}|0[0-9]{2,3}-[0-9]{7,8}", "an 11-digit mobile number or a 0AA(A)-NNNNNNN(N) line"
)
duty_phone = _pattern(r"[0-9][0-9-]{2,19}", "3-20 digits and dashes")
_TAG = re.compile(r"[a-z][a-z0-9_]{0,31}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Unicode bidi controls (embeddings, overrides, isolates, marks) reorder what a
# reader sees: "Trojan Source" names and labels that display as something else.
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_INTEGER = re.compile(r"-?[0-9]{1,9}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def text(cell: str) -> str:
    """Free text: at most 200 printable characters, no surrounding whitespace."""
    if len(cell) > 200:
        raise CellError("must be at most 200 characters")
    if cell != cell.strip():
        raise CellError("must not start or end with whitespace")
    if _UNPRINTABLE.search(cell):
        raise CellError("must not contain control characters")
    if bidi := _BIDI.search(cell):
        raise CellError(
            f"must not contain bidirectional control characters (U+{ord(bidi.group()):04X})"
        )
    return cell


def choice(values: Sequence[str]) -> Parser:
    """A parser accepting exactly one of ``values``."""
    allowed = frozenset(values)
    hint = "one of " + ", ".join(values)

    def parse(text: str) -> str:
        if text not in allowed:
            raise CellError(f"must be {hint}")
        return text

    return parse


def integer(low: int, high: int) -> Parser:
    """A parser of whole numbers from ``low`` to ``high``."""

    def parse(text: str) -> int:
        if not _INTEGER.fullmatch(text):
            raise CellError("must be a whole number")
        value = int(text)
        if not low <= value <= high:
            raise CellError(f"must be between {low} and {high}")
        return value

    return parse


def iso_date(text: str) -> date:
    """A calendar date written YYYY-MM-DD."""
    if not _DATE.fullmatch(text):
        raise CellError("must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CellError("is not a calendar date") from None


def tags(cell: str) -> tuple[str, ...]:
    """Tags separated by ``;``, as a sorted tuple."""
    found = cell.split(";")
    if not all(_TAG.fullmatch(tag) for tag in found):
        raise CellError("must be tags separated by ; (a-z 0-9 _, starting with a letter, ≤ 32)")
    if len(set(found)) != len(found):
        raise CellError("must not repeat a tag")
    return tuple(sorted(found))  # sorted, so the same set always compares (and exports) equal


@dataclass(frozen=True, slots=True)
class Column:
    """One CSV column: how its text becomes a value; an empty optional cell is ``empty``."""

    name: str
    parse: Parser
    required: bool = True
    empty: Any = None


def format_cell(value: Any) -> str:
    """A value as its CSV text; the inverse of the column's parser."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ";".join(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
