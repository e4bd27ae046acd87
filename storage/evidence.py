"""Evidence rows: files staged for a person's draft, and files kept with their report.

A staged row holds its owner's pseudonym and one ciphertext (sealed by the service); a kept row is inserted
fresh at submission, so no version of it, in the WAL or anywhere, ever named the reporter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import new_id
from storage.owners import ClearOwners, Owners
from storage.schema import evidence, evidence_staged, reports


@dataclass(frozen=True)
class Evidence:
    """One evidence file's record; the file itself lives encrypted in the data directory.

    `mac` binds the record to its report (None while staged, and for rows kept before it existed).
    """

    uid: str
    kind: str
    sha256: str
    size: int
    received_at: datetime
    file_ref: bytes
    mac: bytes | None = None


@dataclass(frozen=True)
class StagedRow:
    """A staged row as stored: `details` is sealed by the evidence service (clear JSON if migrated)."""

    id: int
    details: bytes


@dataclass(frozen=True)
class KeptEvidence:
    """A kept row with the report it claims to belong to (for verification)."""

    id: int
    report_id: int
    code: str
    item: Evidence


def staged_owner_binding(tag: str) -> str:
    """Return what a staged row's sealed owner is bound to."""
    return f"evidence_staged.owner:{tag}"


class EvidenceRepository:
    """SQL for staged and kept evidence. A staged row's `owner` holds a keyed tag (see storage.owners)."""

    def __init__(self, owners: Owners | None = None) -> None:
        self._owners = owners or ClearOwners()

    async def stage(self, conn: AsyncConnection, owner: str, details: bytes) -> int:
        """Record a file received for the owner's draft; return the row's id."""
        tag = self._owners.tags(owner)[0]
        seal = self._owners.seal(owner, binding=staged_owner_binding(tag))
        return new_id(
            await conn.execute(insert(evidence_staged).values(owner=tag, details=details, owner_seal=seal))
        )

    async def staged(self, conn: AsyncConnection, owner: str) -> list[StagedRow]:
        """Return a person's staged rows, oldest first."""
        rows = await conn.execute(
            select(evidence_staged.c.id, evidence_staged.c.details)
            .where(evidence_staged.c.owner.in_(self._owners.tags(owner)))
            .order_by(evidence_staged.c.id)
        )
        return [StagedRow(r.id, bytes(r.details)) for r in rows]

    async def all_staged(self, conn: AsyncConnection) -> list[tuple[str, StagedRow]]:
        """Return every staged row with its owner (for the overall quota: a few hundred at most)."""
        rows = await conn.execute(
            select(
                evidence_staged.c.id,
                evidence_staged.c.owner,
                evidence_staged.c.owner_seal,
                evidence_staged.c.details,
            ).order_by(evidence_staged.c.id)
        )
        return [
            (
                self._owners.open(r.owner_seal, r.owner, binding=staged_owner_binding(r.owner)),
                StagedRow(r.id, bytes(r.details)),
            )
            for r in rows
        ]

    async def unstage(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        """Delete staged rows."""
        if ids:
            await conn.execute(delete(evidence_staged).where(evidence_staged.c.id.in_(list(ids))))

    async def keep(self, conn: AsyncConnection, report_id: int, items: Sequence[Evidence]) -> None:
        """Insert a report's evidence rows (new rows: nothing of the staged ones is carried over)."""
        for item in items:
            await conn.execute(
                insert(evidence).values(
                    uid=item.uid,
                    report_id=report_id,
                    kind=item.kind,
                    sha256=item.sha256,
                    size=item.size,
                    received_at=item.received_at,
                    file_ref=item.file_ref,
                    mac=item.mac,
                )
            )

    async def kept_bytes(self, conn: AsyncConnection) -> int:
        """Return the size of every kept file together."""
        return int((await conn.execute(select(func.coalesce(func.sum(evidence.c.size), 0)))).scalar() or 0)

    async def for_report(self, conn: AsyncConnection, report_id: int) -> list[Evidence]:
        """Return a report's evidence, in the order received."""
        rows = await conn.execute(
            select(evidence).where(evidence.c.report_id == report_id).order_by(evidence.c.id)
        )
        return [_evidence(r) for r in rows]

    async def for_reports(
        self, conn: AsyncConnection, report_ids: Sequence[int]
    ) -> dict[int, list[Evidence]]:
        """Return each report's evidence, in the order received."""
        found: dict[int, list[Evidence]] = defaultdict(list)
        if report_ids:
            rows = await conn.execute(
                select(evidence).where(evidence.c.report_id.in_(list(report_ids))).order_by(evidence.c.id)
            )
            for row in rows:
                found[row.report_id].append(_evidence(row))
        return found

    async def kept_batch(self, conn: AsyncConnection, after: int, limit: int) -> list[KeptEvidence]:
        """Return kept rows with an id above `after`, with their report's code, in id order."""
        rows = await conn.execute(
            select(evidence, reports.c.code)
            .join(reports, reports.c.id == evidence.c.report_id)
            .where(evidence.c.id > after)
            .order_by(evidence.c.id)
            .limit(limit)
        )
        return [KeptEvidence(r.id, r.report_id, r.code, _evidence(r)) for r in rows]

    async def set_mac(self, conn: AsyncConnection, row_id: int, mac: bytes) -> bool:
        """Bind a row kept before MACs existed; False if it has one already (another instance did it)."""
        result = await conn.execute(
            update(evidence).where(evidence.c.id == row_id, evidence.c.mac.is_(None)).values(mac=mac)
        )
        return bool(result.rowcount)

    async def rebind(self, conn: AsyncConnection, row_id: int, file_ref: bytes, mac: bytes) -> bool:
        """Store a kept row's file reference and MAC made under a new key (a key rotation)."""
        result = await conn.execute(
            update(evidence).where(evidence.c.id == row_id).values(file_ref=file_ref, mac=mac)
        )
        return bool(result.rowcount)

    async def reseal_staged(self, conn: AsyncConnection, row_id: int, details: bytes) -> None:
        """Store a staged row's details sealed under a new key (a key rotation)."""
        await conn.execute(
            update(evidence_staged).where(evidence_staged.c.id == row_id).values(details=details)
        )


def _evidence(row: Row[Any]) -> Evidence:
    return Evidence(
        uid=row.uid,
        kind=row.kind,
        sha256=row.sha256,
        size=row.size,
        received_at=row.received_at,
        file_ref=bytes(row.file_ref),
        mac=bytes(row.mac) if row.mac is not None else None,
    )
