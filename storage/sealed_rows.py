"""The rows sealed under transient keys (raw updates, drafts, staged evidence, phone clean-ups), read and
rewritten in bulk by the scrub (bot.services.upkeep.history)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.schema import drafts, evidence_staged, inbox, outbox

_TRANSIENT_PREFIX = b"\x02"


@dataclass(frozen=True)
class SealedRow:
    """One short-lived encrypted value, the row's identity, and (drafts, staged evidence) its owner's tag
    and sealed owner."""

    table: str
    key: tuple[str | int, ...]  # the row's identity: what the binding is built from
    payload: bytes
    owner_seal: bytes | None = None


@dataclass(frozen=True)
class Rewrite:
    """A row's new payload and, for tagged rows, its new tag and sealed owner."""

    row: SealedRow
    payload: bytes
    tag: str | None = None
    owner_seal: bytes | None = None


class SealedRowRepository:
    """Finds and rewrites transiently sealed payloads."""

    # Where transient rows live: the tables whose old row versions a scrub leaves behind it.
    tables = (inbox, drafts, evidence_staged, outbox)

    async def all(self, conn: AsyncConnection) -> list[SealedRow]:
        """Every live transient payload: pending updates, drafts, staged evidence, clean-ups not yet sent."""
        found: list[SealedRow] = []
        updates = await conn.execute(
            select(inbox.c.update_id, inbox.c.payload).where(inbox.c.payload.is_not(None))
        )
        found.extend(SealedRow("inbox", (u.update_id,), u.payload) for u in updates)
        kept = await conn.execute(
            select(drafts.c.pseudonym, drafts.c.kind, drafts.c.nonce, drafts.c.payload, drafts.c.owner)
        )
        found.extend(SealedRow("drafts", (d.pseudonym, d.kind, d.nonce), d.payload, d.owner) for d in kept)
        stmt = select(outbox.c.id, outbox.c.uid, outbox.c.payload).where(
            outbox.c.payload.is_not(None), func.substr(outbox.c.payload, 1, 1) == _TRANSIENT_PREFIX
        )
        found.extend(SealedRow("outbox", (o.id, o.uid), o.payload) for o in await conn.execute(stmt))
        staged = await conn.execute(
            select(
                evidence_staged.c.id,
                evidence_staged.c.owner,
                evidence_staged.c.details,
                evidence_staged.c.owner_seal,
            )
        )
        found.extend(SealedRow("evidence_staged", (e.id, e.owner), e.details, e.owner_seal) for e in staged)
        return found

    async def rewrite(self, conn: AsyncConnection, rewrites: list[Rewrite]) -> None:
        """Store new payloads (and tags) for rows found by `all`, in the same write transaction."""
        by_table: dict[str, list[dict[str, object]]] = {}
        for r in rewrites:
            params = {f"k{i}": part for i, part in enumerate(r.row.key)}
            by_table.setdefault(r.row.table, []).append(
                {**params, "p": r.payload, "t": r.tag, "s": r.owner_seal}
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
                .values(payload=bindparam("p"), pseudonym=bindparam("t"), owner=bindparam("s")),
                by_table["drafts"],
            )
        if "evidence_staged" in by_table:
            await conn.execute(
                update(evidence_staged)
                .where(evidence_staged.c.id == bindparam("k0"))
                .values(details=bindparam("p"), owner=bindparam("t"), owner_seal=bindparam("s")),
                by_table["evidence_staged"],
            )
        if "outbox" in by_table:
            await conn.execute(
                update(outbox).where(outbox.c.id == bindparam("k0")).values(payload=bindparam("p")),
                by_table["outbox"],
            )
