"""Log events: one JSON object per line, journald priorities, redaction as a safety net."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator

import pytest

from sensord import logs


class Captured:
    """sensord's handler and filter, writing into a buffer."""

    def __init__(self, fmt: str = "json", journal: bool = False) -> None:
        self.stream = io.StringIO()
        handler = logging.StreamHandler(self.stream)
        formatter = logs.JsonFormatter(journal) if fmt == "json" else logs.TextFormatter(journal)
        handler.setFormatter(formatter)
        handler.addFilter(logs.Redactor())
        self.handler = handler
        self.log = logging.getLogger("sensord.test")

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    sink = Captured()
    logger = sink.log
    logger.addHandler(sink.handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        logger.removeHandler(sink.handler)


def test_an_event_is_one_json_object_with_the_standard_fields_and_extras(
    captured: Captured,
) -> None:
    captured.log.info("alert raised", extra={"device_id": "SMK-1", "alert_id": 7, "order_id": 3})
    [event] = captured.events()
    assert list(event)[:4] == ["ts", "level", "logger", "msg"]
    assert event["level"] == "info" and event["logger"] == "sensord.test"
    assert event["msg"] == "alert raised"
    assert (event["device_id"], event["alert_id"], event["order_id"]) == ("SMK-1", 7, 3)
    assert str(event["ts"]).endswith("+00:00")


def test_a_traceback_is_one_field_of_one_line(captured: Captured) -> None:
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        captured.log.exception("writer failed", extra={"writer": "w1"})
    captured.log.warning("next", stack_info=True)
    lines = captured.lines()
    assert len(lines) == 2
    failed, following = (json.loads(line) for line in lines)
    assert failed["writer"] == "w1"
    assert str(failed["exc"]).startswith("Traceback (most recent call last):")
    assert "ValueError: first line\nsecond line" in str(failed["exc"])
    assert "Stack (most recent call last)" in str(following["stack"])


def test_no_terminal_control_characters_reach_the_output(captured: Captured) -> None:
    hostile = "a\x1b[31mred\x1b[0m \x9b2J b\u2028c\rd\ne"
    captured.log.warning(hostile, extra={"topic": hostile})
    [line] = captured.lines()
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in line)
    assert "\u2028" not in line
    assert json.loads(line)["msg"] == hostile  # escaped, not lost


def test_text_format_escapes_control_characters_too() -> None:
    formatter = logs.TextFormatter()
    record = logging.makeLogRecord(
        {"name": "sensord.x", "levelname": "INFO", "msg": "a\x1b[2Jb\nc", "device_id": "D\x9b"}
    )
    assert formatter.format(record) == "INFO    sensord.x: a\\x1b[2Jb\\nc device_id=D\\x9b"


@pytest.mark.parametrize(("level", "prefix"), [("debug", "<7>"), ("info", "<6>"), ("error", "<3>")])
def test_under_journald_each_line_carries_its_priority(level: str, prefix: str) -> None:
    record = logging.makeLogRecord(
        {"name": "sensord.x", "levelname": level.upper(), "msg": "m", "levelno": 10}
    )
    line = logs.JsonFormatter(priority_prefix=True).format(record)
    assert line.startswith(prefix)
    assert json.loads(line.removeprefix(prefix))["msg"] == "m"
    assert logs.TextFormatter(priority_prefix=True).format(record).startswith(prefix)


def test_journald_is_detected_only_when_journal_stream_names_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with open(os.devnull, "w") as devnull:
        stat = os.fstat(devnull.fileno())
        monkeypatch.setattr(sys, "stderr", devnull)
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert not logs.stderr_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")
        assert not logs.stderr_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert logs.stderr_is_journal()


def test_fields_named_like_secrets_are_masked(captured: Captured) -> None:
    captured.log.info(
        "connecting",
        extra={
            "password": "hunter2",
            "mqtt_token": "t0k3n",
            "client_secret": "s3",
            "api_key": "k",
            "empty_password": "",
            "dsn": "postgresql://sensord:hunter2@db:5432/sensord",
            "conninfo": "host=db user=sensord password=hunter2 dbname=x",
            "nested": {"webhook_secret": "w", "url": "https://u:pw@hook.example/x"},
        },
    )
    [event] = captured.events()
    assert "hunter2" not in json.dumps(event)
    masked = {event[key] for key in ("password", "mqtt_token", "client_secret", "api_key")}
    assert masked == {logs.MASK}
    assert event["empty_password"] == ""
    assert event["dsn"] == "postgresql://sensord:***@db:5432/sensord"
    assert event["conninfo"] == "host=db user=sensord password=*** dbname=x"
    assert event["nested"] == {"webhook_secret": "***", "url": "https://u:***@hook.example/x"}


def test_passwords_in_messages_and_tracebacks_are_masked(captured: Captured) -> None:
    try:
        raise ConnectionError("cannot reach postgresql://sensord:hunter2@db/sensord")
    except ConnectionError as exc:
        captured.log.exception("database down: %s", exc, extra={"error": str(exc)})
    [line] = captured.lines()
    assert "hunter2" not in line
    assert line.count("sensord:***@db") == 4  # message, field, traceback: source line and message


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call 13812345678 now", "call 138****5678 now"),  # a mobile number
        ("电话13912345678。", "电话139****5678。"),  # in Chinese text
        ("resident 10012345678", "resident 100****5678"),  # the registry's synthetic numbers
        ("landline 021-61234567", "landline 021*****4567"),  # 0AA-NNNNNNNN
        ("landline 0571-1234567", "landline 057*****4567"),  # 0AAA-NNNNNNN
        ("seq 138123456789", "seq 138123456789"),  # 12 digits: not a phone
        ("ts 1764144000000", "ts 1764144000000"),  # epoch milliseconds
        ("at 2026-11-26T10:00:00+08:00", "at 2026-11-26T10:00:00+08:00"),
        ("device SMK-000123", "device SMK-000123"),
    ],
)
def test_phone_numbers_are_masked_anywhere(captured: Captured, text: str, masked: str) -> None:
    captured.log.warning(text, extra={"detail": text, "values": [text]})
    [event] = captured.events()
    assert event["msg"] == event["detail"] == masked
    assert event["values"] == [masked]


def test_an_extra_named_like_a_standard_field_does_not_replace_it(captured: Captured) -> None:
    captured.log.info("m", extra={"level": "x", "ts": 1})
    [event] = captured.events()
    assert event["level"] == "info" and event["extra_level"] == "x" and event["extra_ts"] == 1


def test_bad_arguments_still_log_an_event(captured: Captured) -> None:
    captured.log.info("two %s %s", "only-one")  # noqa: PLE1206
    [event] = captured.events()
    assert event["msg"] == "two %s %s [unformattable arguments]"


def test_configure_installs_the_redacting_json_handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    try:
        logs.configure("INFO", "json")
        logging.getLogger("sensord.x").info(
            "login", extra={"password": "p", "phone": "13812345678"}
        )
        logging.getLogger("sensord.x").debug("hidden")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    [line] = capsys.readouterr().err.splitlines()
    event = json.loads(line)
    assert (event["password"], event["phone"]) == ("***", "138****5678")


def test_fields_named_like_personal_data_are_masked_at_any_depth(captured: Captured) -> None:
    notice = {
        "order": {"id": 4, "place": {"label": "3号楼 501室", "floor": 5, "residents": 2}},
        "contacts": [{"name": "张小明", "phone": "13812341234", "tags": ["elderly"]}],
    }
    captured.log.info(
        "m",
        extra={
            "notice": notice,
            "resident_name": "张小明",
            "tags": ["living_alone"],
            "staff_phone": "+86 138 1234 5678",
        },
    )
    [event] = captured.events()
    text = json.dumps(event, ensure_ascii=False)
    assert "张小明" not in text and "501室" not in text and "elderly" not in text
    assert event["notice"] == {
        "order": {"id": 4, "place": {"label": "***", "floor": 5, "residents": 2}},
        "contacts": "***",
    }
    assert event["resident_name"] == event["tags"] == logs.MASK
    assert event["staff_phone"] == "+86**********5678"
