"""Drafts: one encrypted, expiring work-in-progress per person."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.owners import ClearOwners, Owners
from storage.schema import drafts


@dataclass(frozen=True)
class StoredDraft:
    """A draft row; `payload` is encrypted by the service."""

    pseudonym: str
    nonce: str
    kind: str
    payload: bytes
    expires_at: datetime


def owner_binding(tag: str, kind: str) -> str:
    """Return what a draft's sealed owner is bound to."""
    return f"drafts.owner:{tag}:{kind}"


# Built once: a step of a form reads and saves its draft (storage.dialect.Prebuilt explains why).
_OF_KIND = and_(drafts.c.pseudonym.in_(bindparam("tags", expanding=True)), drafts.c.kind == bindparam("kind"))
_ALIVE = select(drafts).where(_OF_KIND, drafts.c.expires_at > bindparam("now"))
_EXPIRED = select(drafts).where(_OF_KIND, drafts.c.expires_at <= bindparam("now"))
_BY_NONCE = and_(
    drafts.c.pseudonym.in_(bindparam("tags", expanding=True)),
    drafts.c.nonce == bindparam("of_nonce"),
    drafts.c.expires_at > bindparam("now"),
)
_KIND_OF = select(drafts.c.kind).where(_BY_NONCE)
_DELETE_ALL = delete(drafts).where(drafts.c.pseudonym.in_(bindparam("tags", expanding=True)))
_DELETE_ONE = _DELETE_ALL.where(drafts.c.nonce == bindparam("of_nonce"))
_SAVE = (
    update(drafts)
    .where(_BY_NONCE, drafts.c.kind == bindparam("of_kind"))
    .values(
        pseudonym=bindparam("tag"),
        owner=bindparam("sealed_owner"),
        expires_at=bindparam("expiry"),
        payload=bindparam("new_payload"),
        updated_at=bindparam("hour"),
    )
)


class DraftRepository:
    """SQL for drafts. The `pseudonym` column holds the owner's tag (see `Owners`)."""

    def __init__(self, owners: Owners | None = None) -> None:
        self._owners = owners or ClearOwners()

    async def get(
        self, conn: AsyncConnection, pseudonym: str, kind: str, now: datetime
    ) -> StoredDraft | None:
        """Return the person's unexpired draft of one kind."""
        return await self._one(conn, _ALIVE, pseudonym, kind, now)

    async def get_expired(
        self, conn: AsyncConnection, pseudonym: str, kind: str, now: datetime
    ) -> StoredDraft | None:
        """Return the person's draft of one kind if it has expired (not yet purged)."""
        return await self._one(conn, _EXPIRED, pseudonym, kind, now)

    async def all_for(self, conn: AsyncConnection, pseudonym: str) -> list[StoredDraft]:
        """Return every draft of a person, expired or not."""
        rows = await conn.execute(select(drafts).where(drafts.c.pseudonym.in_(self._owners.tags(pseudonym))))
        return [StoredDraft(pseudonym, r.nonce, r.kind, r.payload, r.expires_at) for r in rows]

    async def put(self, conn: AsyncConnection, draft: StoredDraft, now: datetime) -> None:
        """Create or replace the person's draft (under their current tag)."""
        tags = self._owners.tags(draft.pseudonym)
        await conn.execute(delete(drafts).where(drafts.c.pseudonym.in_(tags), drafts.c.kind == draft.kind))
        await conn.execute(
            insert(drafts).values(
                pseudonym=tags[0],
                owner=self._owners.seal(draft.pseudonym, binding=owner_binding(tags[0], draft.kind)),
                nonce=draft.nonce,
                kind=draft.kind,
                payload=draft.payload,
                created_at=_hour(now),
                updated_at=_hour(now),
                expires_at=_coarse_expiry(draft.kind, now, draft.expires_at),
            )
        )

    async def save(
        self,
        conn: AsyncConnection,
        pseudonym: str,
        nonce: str,
        payload: bytes,
        now: datetime,
        expires_at: datetime,
        kind: str | None = None,
    ) -> bool:
        """Update the payload of the draft with this nonce (and kind, if given); False if it is gone or
        replaced."""
        tags = self._owners.tags(pseudonym)
        # Named unlike the columns: a parameter named as a column would be SET as well.
        found = {"tags": tags, "of_nonce": nonce, "now": now}
        if kind is None:
            row = (await conn.execute(_KIND_OF, found)).first()
            if row is None:
                return False
            kind_of_row: str = row.kind
        else:
            # The caller knows the kind: the update itself tells whether the draft is still there, one
            # statement instead of two on every step of a form.
            kind_of_row = kind
        # Saved under the current tag: a draft being worked on follows the epochs by itself.
        result = await conn.execute(
            _SAVE,
            {
                **found,
                "of_kind": kind_of_row,
                "tag": tags[0],
                "sealed_owner": self._owners.seal(pseudonym, binding=owner_binding(tags[0], kind_of_row)),
                "expiry": _coarse_expiry(kind, now, expires_at),
                "new_payload": payload,
                "hour": _hour(now),
            },
        )
        return (result.rowcount or 0) == 1

    async def delete(self, conn: AsyncConnection, pseudonym: str, nonce: str | None = None) -> bool:
        """Delete the person's drafts (only the one with this nonce, if given)."""
        tags = self._owners.tags(pseudonym)
        if nonce is None:
            result = await conn.execute(_DELETE_ALL, {"tags": tags})
        else:
            result = await conn.execute(_DELETE_ONE, {"tags": tags, "of_nonce": nonce})
        return (result.rowcount or 0) > 0

    async def expired(self, conn: AsyncConnection, now: datetime, limit: int = 100) -> list[StoredDraft]:
        """Return drafts past their expiry, with their owners."""
        rows = await conn.execute(select(drafts).where(drafts.c.expires_at <= now).limit(limit))
        return [
            StoredDraft(
                self._owners.open(r.owner, r.pseudonym, binding=owner_binding(r.pseudonym, r.kind)),
                r.nonce,
                r.kind,
                r.payload,
                r.expires_at,
            )
            for r in rows
        ]

    async def _one(
        self, conn: AsyncConnection, stmt: Select[Any], pseudonym: str, kind: str, now: datetime
    ) -> StoredDraft | None:
        params = {"tags": self._owners.tags(pseudonym), "kind": kind, "now": now}
        row = (await conn.execute(stmt, params)).first()
        if row is None:
            return None
        return StoredDraft(pseudonym, row.nonce, row.kind, row.payload, row.expires_at)


# A draft row names its owner; old copies of it outlive the row in the WAL. Exact times there would match
# the receipt time of the anonymous report it became, so the row keeps hours only.
def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _coarse_expiry(kind: str | None, now: datetime, expires_at: datetime) -> datetime:
    if kind == "sos" or expires_at - now < timedelta(hours=2):
        # An SOS follow-up's report names its author anyway; a lifetime this short is a test or a choice
        # the operator made knowingly: an hour more would change what they asked for.
        return expires_at
    floor = _hour(expires_at)
    return floor if floor == expires_at else floor + timedelta(hours=1)
