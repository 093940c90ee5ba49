"""Topic grammar."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.topics import TOPIC_KINDS, Topic, parse_topic, reading_subscription
from sensord.errors import PayloadError


def test_parses_the_three_parts() -> None:
    assert parse_topic("sensord/v1/jd01/fire_lane/FL-0007") == Topic("jd01", "fire_lane", "FL-0007")


def test_custom_prefix() -> None:
    assert parse_topic("city/x/sensord/v1/s/smoke/d", "city/x/sensord/v1").device_id == "d"
    assert reading_subscription("a/b") == "a/b/+/+/+"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "sensord/v1",
        "sensord/v1/jd01/smoke",
        "sensord/v2/jd01/smoke/X",
        "sensord/v1/jd01/smoke/X/extra",
        "sensord/v1//smoke/X",
        "sensord/v1/jd01/smoke/",
        "sensord/v1/jd01/Smoke/X",
    ],
)
def test_rejects_malformed_topics(topic: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_topic(topic)
    assert caught.value.reason == "bad_topic"


@given(st.text(max_size=60))
def test_any_text_parses_or_is_a_bad_topic(topic: str) -> None:
    try:
        parsed = parse_topic(topic)
    except PayloadError as exc:
        assert exc.reason == "bad_topic"
    else:
        assert parsed.kind in TOPIC_KINDS
