"""Conditions in rule files: a small, safe expression language over a reading's fields.

``obscuration >= 10 and smoke``, ``state == "fault" or trapped``,
``place_type in ("public_kitchen", "stairwell")``. Compiled once at load time
from Python's own parser, but only names, constants, comparisons, ``and``,
``or``, ``not`` and tuples are accepted, so a rule file cannot run code.

Missing data is *unknown*, not false: a comparison with a field the reading
lacks (or holds NULL) is unknown, and ``not``/``and``/``or`` follow Kleene's
three-valued logic (``not unknown`` is unknown; ``x or unknown`` is true when
x is). A condition holds only when it is true, so neither a firing nor a
clearing condition is met by a reading that does not carry its fields.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sensord.errors import ExpressionError

Fields = Mapping[str, Any]
_MISSING = object()

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda left, right: left in right,
    ast.NotIn: lambda left, right: left not in right,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: call it with a reading's fields."""

    text: str
    names: frozenset[str]
    _evaluate: Callable[[Fields], Any]

    def __call__(self, fields: Fields) -> bool:
        """True when the condition holds for these fields."""
        return self.truth(fields) is True

    def truth(self, fields: Fields) -> bool | None:
        """True, False, or None when the fields do not settle it (missing or NULL data)."""
        return _truth(self._evaluate(fields))


def compile_condition(text: str) -> Condition:
    """Compile ``text``; raise ExpressionError naming the offending construct."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error at column {exc.offset}: {exc.msg}") from None
    names: set[str] = set()
    evaluate = _compile(tree.body, names)
    return Condition(text, frozenset(names), evaluate)


def _compile(node: ast.expr, names: set[str]) -> Callable[[Fields], Any]:  # noqa: PLR0911
    if isinstance(node, ast.Constant) and isinstance(node.value, bool | int | float | str | None):
        value = node.value
        return lambda fields: value
    if isinstance(node, ast.Name):
        name = _field_name(node.id)
        names.add(name)
        return lambda fields: fields.get(name, _MISSING)
    if isinstance(node, ast.Tuple | ast.List):
        items = [_compile(item, names) for item in node.elts]
        return lambda fields: tuple(item(fields) for item in items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, names)
        return lambda fields: _not(_truth(inner(fields)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = node.operand
        if isinstance(operand, ast.Constant) and isinstance(operand.value, int | float):
            negative = -operand.value
            return lambda fields: negative
    if isinstance(node, ast.BoolOp):
        parts = [_compile(value, names) for value in node.values]
        if isinstance(node.op, ast.And):
            return lambda fields: _and([_truth(part(fields)) for part in parts])
        return lambda fields: _or([_truth(part(fields)) for part in parts])
    if isinstance(node, ast.Compare):
        return _compile_compare(node, names)
    raise ExpressionError(
        f"{type(node).__name__} at column {node.col_offset + 1} is not allowed in a condition "
        "(use field names, constants, comparisons, and/or/not, tuples)"
    )


def _compile_compare(node: ast.Compare, names: set[str]) -> Callable[[Fields], Any]:
    if len(node.ops) == 1 and isinstance(node.ops[0], ast.Is | ast.IsNot):
        # `x is None` / `x is not None`: whether the reading carries x; always known.
        right = node.comparators[0]
        if not (isinstance(right, ast.Constant) and right.value is None):
            raise ExpressionError(f"column {right.col_offset + 1}: `is` compares with None only")
        operand = _compile(node.left, names)
        absent = isinstance(node.ops[0], ast.Is)
        return lambda fields: (operand(fields) in (None, _MISSING)) is absent
    unknown = [op for op in node.ops if type(op) not in _COMPARE]
    if unknown:  # e.g. `is` inside a chain: refused at load, like any other construct
        raise ExpressionError(
            f"{type(unknown[0]).__name__} at column {node.col_offset + 1} is not allowed here"
        )
    operands = [_compile(node.left, names)] + [_compile(c, names) for c in node.comparators]
    operators = [_COMPARE[type(op)] for op in node.ops]

    def compare(fields: Fields) -> bool | None:
        left = operands[0](fields)
        for compare_op, right_of in zip(operators, operands[1:], strict=True):
            right = right_of(fields)
            if left is _MISSING or right is _MISSING or left is None or right is None:
                return None
            try:
                if not compare_op(left, right):
                    return False
            except TypeError:  # "fault" > 3: the types do not compare, so it is unknown
                return None
            left = right
        return True

    return compare


def _truth(value: Any) -> bool | None:
    """A value used as a condition: missing or NULL is unknown."""
    if value is _MISSING or value is None:
        return None
    return bool(value)


def _not(value: bool | None) -> bool | None:
    return None if value is None else not value


def _and(values: list[bool | None]) -> bool | None:
    if False in values:
        return False
    return None if None in values else True


def _or(values: list[bool | None]) -> bool | None:
    if True in values:
        return True
    return None if None in values else False


def _field_name(name: str) -> str:
    if name.startswith("_"):
        raise ExpressionError(f"name {name!r}: names starting with _ are not fields")
    return name
