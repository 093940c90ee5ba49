"""The audit chain's check: walk one table's rows in chain order, report the first break.

Each audit row carries its chain position, the previous row's hash and its own
hash; the database computes them on insert (migrations/0007) and recomputes the
digest for this walk. A row whose content changed no longer matches its hash;
a deleted row leaves a gap in the positions or a ``prev_hash`` that no longer
follows; rows deleted from the end fall short of the table's head. A recorded
head (``anchors``: position -> hash, e.g. printed by an earlier verify and kept
elsewhere) catches even an owner who rebuilt the whole chain after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GENESIS = bytes(32)  # prev_hash of a chain's first row


@dataclass(frozen=True, slots=True)
class Link:
    """One row as stored, with the digest the database recomputed from its content."""

    chain_seq: int
    row_id: int
    prev_hash: bytes
    hash: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class Break:
    """The first place the chain does not hold; ``row_id`` None for a deleted row."""

    chain_seq: int
    row_id: int | None
    reason: str


class ChainWalk:
    """Feed links in chain order with :meth:`add`; :meth:`finish` checks the head."""

    def __init__(self, anchors: Mapping[int, bytes] | None = None) -> None:
        self.rows = 0
        self.last_seq = 0
        self.last_hash = GENESIS
        self._last_id: int | None = None
        self._anchors = dict(anchors or {})

    def add(self, link: Link) -> Break | None:
        """The break this row shows, or None while the chain holds."""
        expected = self.last_seq + 1
        if link.chain_seq != expected:
            missing = (
                f"position {expected}"
                if link.chain_seq == expected + 1
                else f"positions {expected}..{link.chain_seq - 1}"
            )
            return Break(expected, None, f"deleted: {missing} missing before row id {link.row_id}")
        if link.prev_hash != self.last_hash:
            after = f"row id {self._last_id}" if self._last_id is not None else "the chain's start"
            return Break(
                link.chain_seq,
                link.row_id,
                f"row id {link.row_id} does not follow {after}: a row before it was edited "
                "and rehashed, or replaced",
            )
        if link.digest != link.hash:
            return Break(
                link.chain_seq,
                link.row_id,
                f"edited: row id {link.row_id} no longer matches its hash",
            )
        recorded = self._anchors.pop(link.chain_seq, None)
        if recorded is not None and recorded != link.hash:
            return Break(
                link.chain_seq,
                link.row_id,
                f"row id {link.row_id} is not the row recorded at position {link.chain_seq}: "
                "the chain was rebuilt",
            )
        self.rows += 1
        self.last_seq = link.chain_seq
        self.last_hash = link.hash
        self._last_id = link.row_id
        return None

    def finish(self, head_seq: int, head_hash: bytes) -> Break | None:
        """After the last row: the table's head must be that row (none deleted at the end)."""
        if head_seq > self.last_seq:
            return Break(
                self.last_seq + 1,
                None,
                f"deleted: positions {self.last_seq + 1}..{head_seq} missing at the end",
            )
        if head_seq != self.last_seq or head_hash != self.last_hash:
            return Break(
                self.last_seq, self._last_id, "the chain's head does not match its last row"
            )
        if self._anchors:
            position = min(self._anchors)
            return Break(position, None, f"recorded position {position} is not in the chain")
        return None
