"""Principals: usernames, Mosquitto hashes, and the ACL that binds topics to identities."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.principals import (
    DevicePlace,
    Principal,
    PrincipalInvalid,
    acl_file,
    acl_for,
    hash_secret,
    split_username,
    username,
    verify_secret,
)
from sensord.core.topics import parse_topic

PREFIX = "sensord/v1"
ids = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
streets = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
kinds = st.sampled_from(["smoke", "ebike", "elevator", "fire_lane"])


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (+ one level, # the rest), as the broker applies an ACL."""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


def allowed(acl_filters: tuple[str, ...], topic: str) -> bool:
    return any(matches(f, topic) for f in acl_filters)


@given(ids, st.sampled_from(["device", "gateway", "staff", "app", "sensord"]))
def test_a_username_splits_back_into_kind_and_id(principal_id: str, kind: str) -> None:
    assert split_username(username(kind, principal_id)) == (kind, principal_id)  # type: ignore[arg-type]


def test_bad_kinds_and_ids_are_refused() -> None:
    with pytest.raises(PrincipalInvalid):
        username("device", "a/b")
    with pytest.raises(PrincipalInvalid):
        username("root", "x")  # type: ignore[arg-type]
    assert split_username("anonymous") is None
    assert split_username("root.x") is None


@given(st.text(max_size=40), st.binary(min_size=12, max_size=12))
def test_a_hash_verifies_its_secret_only(secret: str, salt: bytes) -> None:
    digest = hash_secret(secret, salt, iterations=10)
    assert verify_secret(secret, digest)
    assert not verify_secret(secret + "x", digest)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_mosquitto_passwd_hashes_verify_here(tmp_path: Path) -> None:
    # The format is Mosquitto's own: what its tool writes, our verifier accepts.
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "u", "s3cret"], check=True)
    digest = path.read_text().strip().split(":", 1)[1]
    assert digest.startswith("$7$")
    assert verify_secret("s3cret", digest)
    assert not verify_secret("s3cre", digest)


@given(ids, streets, kinds, ids, streets, kinds)
def test_a_device_writes_only_its_own_topics(
    own: str, street: str, kind: str, other: str, other_street: str, other_kind: str
) -> None:
    place = DevicePlace(own, street, kind)
    acl = acl_for(Principal("device", own, "h"), {own: place}, PREFIX)
    assert acl.read == ()
    for topic in acl.write:
        assert "+" not in topic and "#" not in topic
        parsed = parse_topic(topic, PREFIX)
        assert parsed.device_id == own and parsed.street == street
    foreign = f"{PREFIX}/{other_street}/{other_kind}/{other}"
    if (other, other_street, other_kind) != (own, street, kind):
        assert not allowed(acl.write, foreign)
    assert not allowed(acl.write, f"{PREFIX}/{street}/dispatch/{own}")


@given(st.lists(ids, min_size=1, max_size=5, unique=True), ids)
def test_a_gateway_writes_only_its_listed_devices(listed: list[str], stranger: str) -> None:
    places = {d: DevicePlace(d, "s1", "smoke") for d in [*listed, stranger]}
    gateway = Principal("gateway", "gw", "h", tuple(listed))
    acl = acl_for(gateway, places, PREFIX)
    for device_id in listed:
        assert allowed(acl.write, f"{PREFIX}/s1/smoke/{device_id}")
    if stranger not in listed:
        assert not allowed(acl.write, f"{PREFIX}/s1/smoke/{stranger}")
    assert not allowed(acl.write, f"{PREFIX}/s1/dispatch/org")


def test_an_unregistered_device_gets_no_topic() -> None:
    acl = acl_for(Principal("device", "ghost", "h"), {}, PREFIX)
    assert acl.write == () and acl.read == ()
    gateway = acl_for(Principal("gateway", "gw", "h", ("ghost",)), {}, PREFIX)
    assert gateway.write == () and "ghost" in gateway.comments[0]


@given(ids, ids)
def test_commanders_write_only_their_own_command_segment(me: str, other: str) -> None:
    for kind in ("staff", "app"):
        acl = acl_for(Principal(kind, me, "h"), {}, PREFIX)  # type: ignore[arg-type]
        mine = f"{PREFIX}/s1/orders/7/events/{kind}.{me}"
        assert allowed(acl.write, mine)
        if other != me:
            assert not allowed(acl.write, f"{PREFIX}/s1/orders/7/events/{kind}.{other}")
        assert not allowed(acl.write, f"{PREFIX}/s1/orders/7/replies")
        assert not allowed(acl.write, f"{PREFIX}/s1/dispatch/{me}")
        assert not allowed(acl.write, f"{PREFIX}/s1/smoke/{me}")


def test_only_sensord_writes_notices_and_replies() -> None:
    principals = [
        Principal("device", "d1", "h"),
        Principal("gateway", "g1", "h", ("d1",)),
        Principal("staff", "s1", "h"),
        Principal("app", "org1", "h"),
        Principal("sensord", "main", "h"),
    ]
    places = {"d1": DevicePlace("d1", "st", "smoke")}
    for topic in (f"{PREFIX}/st/dispatch/org1", f"{PREFIX}/st/orders/3/replies"):
        writers = [p.kind for p in principals if allowed(acl_for(p, places, PREFIX).write, topic)]
        assert writers == ["sensord"]


def test_the_acl_file_has_no_rule_for_anonymous_clients() -> None:
    text = acl_file([Principal("device", "d1", "h")], [DevicePlace("d1", "st", "smoke")], PREFIX)
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "user device.d1"
    assert "topic write sensord/v1/st/smoke/d1" in rules
    assert not any(fnmatch.fnmatch(line, "pattern *") for line in rules)
