"""Named queries of ``sensord audit verify``: each chained table's rows, in chain order,
with the digest the database recomputes from their content (migrations/0007)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from psycopg import AsyncConnection

from sensord.core.audit import Link

Chained = Literal["work_order_events", "alert_events"]
CHAINED: tuple[Chained, ...] = ("work_order_events", "alert_events")

# Fixed texts, one per table: no SQL is assembled from input.
_LINKS: dict[Chained, str] = {
    "work_order_events": "SELECT chain_seq, id, prev_hash, hash,"
    " work_order_event_digest(prev_hash, e) FROM work_order_events e ORDER BY chain_seq",
    "alert_events": "SELECT chain_seq, id, prev_hash, hash,"
    " alert_event_digest(prev_hash, e) FROM alert_events e ORDER BY chain_seq",
}


async def chain_head(conn: AsyncConnection[Any], table: Chained) -> tuple[int, bytes]:
    """The table's head: the position and hash of the last row appended."""
    cur = await conn.execute(
        "SELECT chain_seq, hash FROM audit_chain_heads WHERE table_name = %s", (table,)
    )
    row = await cur.fetchone()
    if row is None:
        return 0, b""
    return int(row[0]), bytes(row[1])


async def chain_links(conn: AsyncConnection[Any], table: Chained) -> AsyncIterator[Link]:
    """Every row of ``table`` in chain order; call inside a transaction (server-side cursor)."""
    async with conn.cursor(name=f"audit_{table}") as cur:
        cur.itersize = 2_000
        await cur.execute(_LINKS[table])
        async for seq, row_id, prev_hash, hash_, digest in cur:
            yield Link(int(seq), int(row_id), bytes(prev_hash), bytes(hash_), bytes(digest))
