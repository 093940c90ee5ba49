"""The one mapping from a command's errors to its exit status and message."""

from __future__ import annotations

import psycopg
import pytest

from sensord import exits
from sensord.cli.common import ArgumentInvalid, guarded
from sensord.errors import SensordError


class Refused(SensordError):
    pass


def failing(exc: Exception) -> int:
    raise exc


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (ArgumentInvalid("--for 0s: too short"), exits.USAGE, "prog: --for 0s: too short"),
        (Refused("no alert 7"), exits.FAILED, "prog: no alert 7"),
        (
            psycopg.errors.UndefinedColumn("column x"),
            exits.FAILED,
            "prog: the database schema is behind; run `sensord migrate`",
        ),
        (
            psycopg.OperationalError("refused"),
            exits.FAILED,
            "prog: cannot reach the database: refused",
        ),
    ],
)
def test_each_error_has_its_exit_status_and_says_why(
    error: Exception, code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert guarded("prog", lambda: failing(error), (Refused,)) == code
    assert capsys.readouterr().err == message + "\n"


def test_a_command_says_what_is_behind(capsys: pytest.CaptureFixture[str]) -> None:
    missing = psycopg.errors.UndefinedTable("relation x")
    assert guarded("reg", lambda: failing(missing), schema_behind="no tables") == exits.FAILED
    assert capsys.readouterr().err == "reg: no tables\n"


def test_an_error_not_mapped_is_not_swallowed() -> None:
    with pytest.raises(Refused):
        guarded("prog", lambda: failing(Refused("not listed")))


def test_success_passes_the_status_through() -> None:
    assert guarded("prog", lambda: exits.OK) == exits.OK
