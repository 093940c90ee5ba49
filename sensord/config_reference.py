"""The configuration reference (docs/configuration.md), generated from the config models.

``python -m sensord.config_reference > docs/configuration.md`` writes it;
``tests/unit/test_config_reference.py`` fails when the committed file differs.

Every section of :class:`sensord.config.Settings` becomes a table (key, type,
default, constraints, environment variable, description); a section field that
is itself a model, or a table of models keyed by a name (``dict[str, Model]``,
e.g. webhooks keyed by organisation id), gets a sub-table of its own.

Descriptions: a field's ``Field(description=...)`` when it has one, otherwise
the trailing comment of the same key in the shipped ``config.toml``. That file
is read line by line, not as TOML: a ``[a.b]`` header sets the table, and a
line ``key = value  # text`` (also a commented-out ``# key = value  # text``)
describes ``a.b.key`` with ``text``; a comment on lines of its own describes
nothing. A commented-out header (``# [a.b]``) sets the table too, so an
example block that is commented out as a whole is read as such. A header
below a table of models (``[dispatch.webhooks.ORG-1]``) describes that
table's entries whatever the name.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sensord.config import CREDENTIALS, ENV_PREFIX, WEBHOOK_CREDENTIAL, Settings, mask_dsn
from sensord.paths import shipped

COMMAND = "python -m sensord.config_reference > docs/configuration.md"
NAME = "<name>"  # stands for the keys of a table of models, in paths and headings

_HEADER = re.compile(r"^\s*(?:#\s*)?\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*(?:#\s*)?([A-Za-z0-9_-]+)\s*=")


def toml_comments(text: str) -> dict[tuple[str, ...], str]:
    """Every key assigned in ``text`` (commented-out ones too) -> its trailing comment, or ""."""
    table: tuple[str, ...] = ()
    found: dict[tuple[str, ...], str] = {}
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
            continue
        key = _KEY.match(line)
        if not key:
            continue
        assignment = line.strip().removeprefix("#").strip()
        comment = _trailing_comment(assignment)
        if comment is not None:
            found[(*table, key.group(1))] = comment
    return found


def _trailing_comment(assignment: str) -> str | None:
    """The comment after a TOML ``key = value``; None when the line is no assignment (prose)."""
    cuts = [i for i, char in enumerate(assignment) if char == "#"] + [len(assignment)]
    for cut in cuts:  # the first "#" outside the value starts the comment
        try:
            tomllib.loads(assignment[:cut])
        except tomllib.TOMLDecodeError:
            continue
        return assignment[cut + 1 :].strip()
    return None


@dataclass(frozen=True)
class Row:
    """One key of one table of the reference."""

    path: tuple[str, ...]  # section, ..., key; NAME where a table of models is keyed
    type: str
    default: str
    constraints: str
    description: str

    @property
    def env(self) -> str:
        """``SENSORD_<SECTION>__<KEY>``."""
        return ENV_PREFIX + "__".join(part.upper() for part in self.path)


@dataclass(frozen=True)
class Table:
    """The keys of one TOML table: a section, or a model nested in one."""

    path: tuple[str, ...]
    doc: str
    rows: tuple[Row, ...]
    key: str = ""  # constraints on the name of each entry, in a table of tables


def tables(
    settings_cls: type[BaseModel] = Settings, config_toml: Path | None = None
) -> list[Table]:
    """The reference as data: one table per section, then the tables nested in it."""
    config_toml = config_toml or shipped("config.toml")
    comments = toml_comments(config_toml.read_text()) if config_toml.is_file() else {}
    loose: list[Row] = []
    found: list[Table] = []
    for name, field in settings_cls.model_fields.items():
        model = _model(field.annotation)
        if model is None:
            loose.append(_row((name,), field, comments))
        else:
            found.extend(_tables(model, (name,), comments, ""))
    if loose:
        found.insert(0, Table((), "Keys outside any section.", tuple(loose)))
    return found


def _tables(
    model: type[BaseModel],
    path: tuple[str, ...],
    comments: dict[tuple[str, ...], str],
    key: str,
) -> Iterator[Table]:
    rows: list[Row] = []
    nested: list[tuple[type[BaseModel], tuple[str, ...], str]] = []
    for name, field in model.model_fields.items():
        rows.append(_row((*path, name), field, comments))
        inner = _model(field.annotation)
        if inner is not None:
            nested.append((inner, (*path, name), ""))
        elif typing.get_origin(field.annotation) is dict:
            name_type, value_type = typing.get_args(field.annotation)
            if (entry := _model(value_type)) is not None:
                nested.append((entry, (*path, name, NAME), _key_constraints(name_type)))
    doc = inspect.cleandoc(model.__dict__.get("__doc__") or "")
    yield Table(path, doc, tuple(rows), key)
    for inner, inner_path, inner_key in nested:
        yield from _tables(inner, inner_path, comments, inner_key)


def _row(path: tuple[str, ...], field: FieldInfo, comments: dict[tuple[str, ...], str]) -> Row:
    return Row(
        path=path,
        type=_type(field.annotation),
        default=_default(path[-1], field),
        constraints=", ".join(_constraints(field.metadata)),
        description=field.description or _comment(path, comments),
    )


def _comment(path: tuple[str, ...], comments: dict[tuple[str, ...], str]) -> str:
    for key, comment in comments.items():
        if len(key) == len(path) and all(p in (k, NAME) for p, k in zip(path, key, strict=True)):
            return comment
    return ""


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _key_constraints(annotation: Any) -> str:
    """The constraints of ``Annotated[str, Field(...)]`` as text; "" for a plain type."""
    metadata: list[Any] = []
    for extra in typing.get_args(annotation)[1:]:
        metadata += extra.metadata if isinstance(extra, FieldInfo) else [extra]
    return ", ".join(_constraints(metadata))


_SIMPLE = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "string (path)",
    SecretStr: "string (secret)",
}


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        kind = " or ".join(f"`{_toml(arg)}`" for arg in args)
    elif origin is dict:
        kind = "table of tables (see below)" if _model(args[1]) else f"table of {_type(args[1])}"
    elif origin in (list, tuple, set, frozenset):
        kind = f"array of {_type(args[0])}" if args else "array"
    elif origin in (typing.Union, types.UnionType):
        kind = " or ".join(_type(arg) for arg in args if arg is not type(None))
        kind += " (optional)" if type(None) in args else ""
    elif _model(annotation):
        kind = "table (see below)"
    else:
        kind = _SIMPLE.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return kind


def _default(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "`***`" if value.get_secret_value() else '`""`'
    if isinstance(value, BaseModel):
        return "(see below)"
    if value is None:
        return "unset"
    if isinstance(value, str) and name.endswith("dsn"):
        value = mask_dsn(value)
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return _toml(value.model_dump())
    return str(value)


def _constraints(metadata: list[Any]) -> Iterator[str]:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for item in metadata:
        for attribute, symbol in symbols.items():
            if isinstance(item, getattr(annotated_types, attribute.capitalize())):
                yield f"{symbol} {getattr(item, attribute)}"
        if isinstance(item, annotated_types.MinLen):
            yield f"length >= {item.min_length}"
        if isinstance(item, annotated_types.MaxLen):
            yield f"length <= {item.max_length}"
        if isinstance(item, annotated_types.MultipleOf):
            yield f"multiple of {item.multiple_of}"
        if pattern := getattr(item, "pattern", None):
            yield f"matches `{pattern}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _heading(path: tuple[str, ...]) -> str:
    return "[" + ".".join(path) + "]" if path else "top level"


_INTRO = f"""\
# Configuration reference

Generated by `python -m sensord.config_reference`; do not edit.
(After changing `sensord/config.py` or `config.toml`: `{COMMAND}`.)

sensord reads `config.toml` (`--config PATH`; default `./config.toml` when it
exists), then systemd credentials, then `SENSORD_*` environment variables; the
later wins: **environment, then credentials, then `config.toml`, then the
defaults below**. Every key is optional. Unknown keys, in the file or as
`SENSORD_*` variables, are rejected at start-up (exit status 78).
`sensord check-config` prints the effective values with secrets masked.

* **Environment variables** are `SENSORD_<SECTION>__<KEY>` (two underscores
  between levels). Inside a table of tables the entry's name is one more level
  (`SENSORD_<SECTION>__<TABLE>__<NAME>__<KEY>`); the environment lower-cases
  that name, so set entries whose names have capitals in `config.toml`.
* **Secrets** are marked *(secret)*; their defaults are shown masked. Put them
  in systemd credentials (below) or the environment, never in `config.toml`.
* **Descriptions** come from the model's `Field(description=...)`, else from
  the trailing `# comment` of the key in the shipped `config.toml`.
* **Constraints** are checked when the configuration is loaded; besides them,
  `ingest.capacity` must be at least `mqtt.receive_maximum` and
  `ingest.batch_max_items`, and `database.pool_max` at least `database.pool_min`.
"""


def render(settings_cls: type[BaseModel] = Settings, config_toml: Path | None = None) -> str:
    """The Markdown reference; ``config_toml`` (default: the shipped one) supplies descriptions."""
    out = [_INTRO]
    out += [
        "## systemd credentials",
        "",
        "With `LoadCredential=NAME:PATH` (docs/operations.md) each file in",
        "`$CREDENTIALS_DIRECTORY` holds one secret (a trailing newline is dropped);",
        "any other file name there is an error.",
        "",
        "| credential | sets | or (the environment wins) |",
        "|---|---|---|",
    ]
    for credential, (section, key) in sorted(CREDENTIALS.items()):
        env = ENV_PREFIX + f"{section}__{key}".upper()
        out.append(f"| `{credential}` | `{section}.{key}` | `{env}` |")
    # One credential per webhook. Organisation ids have capitals, which the
    # environment's nested names lose: there, only the whole table as JSON works.
    out.append(
        f"| `{WEBHOOK_CREDENTIAL}<org_id>` | `dispatch.webhooks.<org_id>.secret` |"
        ' `SENSORD_DISPATCH__WEBHOOKS` as JSON: `{"<org_id>": {"url": …, "secret": …}}` |'
    )
    out.append("")
    for table in tables(settings_cls, config_toml):
        level = "##" if len(table.path) <= 1 else "###"
        out += [f"{level} `{_heading(table.path)}`", ""]
        if table.doc:
            out += [table.doc, ""]
        if NAME in table.path:
            rule = f" ({table.key})" if table.key else ""
            out += [f"One such table per entry; `{NAME}` is the entry's name{rule}.", ""]
        out += [
            "| key | type | default | constraints | environment | description |",
            "|---|---|---|---|---|---|",
        ]
        for row in table.rows:
            cells = (
                f"`{row.path[-1]}`",
                row.type,
                row.default,
                row.constraints,
                f"`{row.env}`",
                row.description,
            )
            out.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
