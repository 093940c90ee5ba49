"""`sensord rules check`: the rule files and the dispatch policy, each all or nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sensord.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "rules"


def check(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["rules", "check", str(directory)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shipped_rules_and_policy_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(SHIPPED, capsys)
    assert code == 0
    assert "routing.toml: 12 routes" in out


def test_a_missing_policy_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(SHIPPED / "sensors.toml", tmp_path)
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    assert "routing.toml: No such file" in err and "policy_file" in err


def test_a_broken_policy_lists_its_problems_and_the_rules_still_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(SHIPPED / "sensors.toml", tmp_path)
    (tmp_path / "routing.toml").write_text('[[route]]\ncategory = "gas"\nowner = "x"\n')
    code, out, err = check(tmp_path, capsys)
    assert code == 1
    assert "10 rules" in out
    assert "route #1: category" in err and "at least one [[sla]]" in err


def test_with_dispatch_off_the_policy_is_not_required(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(SHIPPED / "sensors.toml", tmp_path)
    monkeypatch.setenv("SENSORD_DISPATCH__ENABLED", "false")
    code, out, _ = check(tmp_path, capsys)
    assert code == 0 and "routing" not in out
