"""core/audit: any single edit or deletion in a chain is reported at its position."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.cli.migrate import owner_conninfo
from sensord.config import load_settings, redacted
from sensord.core.audit import GENESIS, Break, ChainWalk, Link


def _digest(prev: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev + content).digest()


def _chain(contents: list[bytes]) -> list[tuple[Link, bytes]]:
    """(link, content) as the database would store them."""
    links, prev = [], GENESIS
    for seq, content in enumerate(contents, start=1):
        digest = _digest(prev, content)
        links.append((Link(seq, 100 + seq, prev, digest, digest), content))
        prev = digest
    return links


def _walk(
    links: list[Link], head: tuple[int, bytes], anchors: dict[int, bytes] | None = None
) -> Break | None:
    walk = ChainWalk(anchors)
    for link in links:
        broken = walk.add(link)
        if broken:
            return broken
    return walk.finish(*head)


contents = st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=30)


@given(contents)
def test_an_untouched_chain_holds(rows: list[bytes]) -> None:
    links = [link for link, _ in _chain(rows)]
    assert _walk(links, (len(links), links[-1].hash)) is None


@given(contents, st.data())
def test_an_edited_row_is_named(rows: list[bytes], data: st.DataObject) -> None:
    links = [link for link, _ in _chain(rows)]
    at = data.draw(st.integers(0, len(links) - 1))
    edited = links[at]
    # The database recomputes the digest from the changed content.
    links[at] = Link(edited.chain_seq, edited.row_id, edited.prev_hash, edited.hash, b"changed")
    assert _walk(links, (len(links), links[-1].hash)) == Break(
        at + 1, edited.row_id, f"edited: row id {edited.row_id} no longer matches its hash"
    )


@given(contents, st.data())
def test_a_deleted_row_is_named_by_its_position(rows: list[bytes], data: st.DataObject) -> None:
    links = [link for link, _ in _chain(rows)]
    head = (len(links), links[-1].hash)
    at = data.draw(st.integers(0, len(links) - 1))
    del links[at]
    broken = _walk(links, head)
    assert broken is not None and broken.chain_seq == at + 1 and broken.row_id is None


def test_a_rebuilt_chain_is_caught_by_a_recorded_head() -> None:
    original = [link for link, _ in _chain([b"a", b"b", b"c"])]
    rebuilt = [link for link, _ in _chain([b"a", b"B", b"c"])]
    assert _walk(rebuilt, (3, rebuilt[-1].hash)) is None
    broken = _walk(rebuilt, (3, rebuilt[-1].hash), {3: original[-1].hash})
    assert broken is not None and broken.chain_seq == 3 and "rebuilt" in broken.reason


def test_migrate_connects_as_the_owner_when_one_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[database]\ndsn = "postgresql://sensord_daemon@db/sensord"\npassword = "run"\n'
    )
    single = load_settings(config, required=True)
    assert "user=sensord_daemon" in owner_conninfo(single.database)
    monkeypatch.setenv("SENSORD_DATABASE__MIGRATE_DSN", "postgresql://owner:inline@db/sensord")
    monkeypatch.setenv("SENSORD_DATABASE__MIGRATE_PASSWORD", "own")
    two = load_settings(config, required=True)
    info = owner_conninfo(two.database)
    assert "user=owner" in info and "password=own" in info and "run" not in info
    assert redacted(two)["database"]["migrate_dsn"] == "postgresql://owner:***@db/sensord"
