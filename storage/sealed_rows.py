"""The rows sealed under transient keys (raw updates, drafts, phone clean-ups), read and rewritten in bulk."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.schema import drafts, evidence_staged, inbox, outbox

_TRANSIENT_PREFIX = b"\x02"


@dataclass(frozen=True)
class SealedRow:
    """One short-lived encrypted value and what its encryption is bound to."""

    table: str
    key: tuple[str | int, ...]  # the row's identity: what the binding is built from
    payload: bytes


class SealedRowRepository:
    """Finds and rewrites transiently sealed payloads."""

    async def all(self, conn: AsyncConnection) -> list[SealedRow]:
        """Every live transient payload: pending updates, drafts, staged evidence, clean-ups not yet sent."""
        found: list[SealedRow] = []
        for r in await conn.execute(
            select(inbox.c.update_id, inbox.c.payload).where(inbox.c.payload.is_not(None))
        ):
            found.append(SealedRow("inbox", (r.update_id,), r.payload))
        kept = await conn.execute(select(drafts.c.pseudonym, drafts.c.kind, drafts.c.nonce, drafts.c.payload))
        found.extend(SealedRow("drafts", (d.pseudonym, d.kind, d.nonce), d.payload) for d in kept)
        stmt = select(outbox.c.id, outbox.c.uid, outbox.c.payload).where(
            outbox.c.payload.is_not(None), func.substr(outbox.c.payload, 1, 1) == _TRANSIENT_PREFIX
        )
        found.extend(SealedRow("outbox", (o.id, o.uid), o.payload) for o in await conn.execute(stmt))
        staged = await conn.execute(
            select(evidence_staged.c.id, evidence_staged.c.owner, evidence_staged.c.details)
        )
        found.extend(SealedRow("evidence_staged", (e.id, e.owner), e.details) for e in staged)
        return found

    async def rewrite(self, conn: AsyncConnection, rows: list[tuple[SealedRow, bytes]]) -> None:
        """Store new payloads for rows found by `all` (in the same write transaction)."""
        by_table: dict[str, list[dict[str, object]]] = {}
        for row, payload in rows:
            by_table.setdefault(row.table, []).append({"k0": row.key[0], **_more(row), "p": payload})
        if "evidence_staged" in by_table:
            await conn.execute(
                update(evidence_staged)
                .where(evidence_staged.c.id == bindparam("k0"))
                .values(details=bindparam("p")),
                by_table["evidence_staged"],
            )
        if "inbox" in by_table:
            await conn.execute(
                update(inbox).where(inbox.c.update_id == bindparam("k0")).values(payload=bindparam("p")),
                by_table["inbox"],
            )
        if "drafts" in by_table:
            await conn.execute(
                update(drafts)
                .where(
                    drafts.c.pseudonym == bindparam("k0"),
                    drafts.c.kind == bindparam("k1"),
                    drafts.c.nonce == bindparam("k2"),
                )
                .values(payload=bindparam("p")),
                by_table["drafts"],
            )
        if "outbox" in by_table:
            await conn.execute(
                update(outbox).where(outbox.c.id == bindparam("k0")).values(payload=bindparam("p")),
                by_table["outbox"],
            )


def _more(row: SealedRow) -> dict[str, object]:
    return {f"k{i}": part for i, part in enumerate(row.key) if i > 0}
