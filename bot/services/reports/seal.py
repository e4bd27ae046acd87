"""Reports' clear columns bound to their sealed body: legacy bodies resealed once, tampering found."""

from __future__ import annotations

import logging

from bot.security import Cipher, DecryptionError
from bot.security.bindings import body_binding, report_body_binding
from storage.database import Database
from storage.reports import ReportRepository
from storage.state import StateRepository

log = logging.getLogger(__name__)

SEALED_MARK = "reports.bodies_sealed"


async def reseal_legacy_bodies(db: Database, cipher: Cipher, repo: ReportRepository | None = None) -> int:
    """Seal bodies made before their clear columns were bound (code only) with those columns; return how
    many. A body that opens under neither binding is left alone: `/r` and `audit verify` report it."""
    repo = repo or ReportRepository()
    state = StateRepository()
    async with db.read() as conn:
        if await state.get(conn, SEALED_MARK) is not None:
            # Done once, at the first start after the upgrade: a body from before then, put back later
            # (from a backup, with edited columns), must fail as tampered, not be sealed as it stands.
            return 0
    resealed, after = 0, 0
    while True:
        async with db.read() as conn:
            page = await repo.after(conn, after)
        if not page:
            # Plain writes: this runs at start before the outbox and the Core exist, and queues nothing.
            async with db.write() as conn:
                await state.put(conn, SEALED_MARK, "1")
            return resealed
        after = page[-1].id
        legacy = []
        for report in page:
            try:
                cipher.decrypt(report.body, binding=body_binding(report))
                continue
            except DecryptionError:
                pass
            try:
                plain = cipher.decrypt(report.body, binding=report_body_binding(report.code))
            except DecryptionError:
                continue
            legacy.append((report.id, cipher.encrypt(plain, binding=body_binding(report))))
        if legacy:
            async with db.write() as conn:  # plain, as above
                for report_id, body in legacy:
                    await repo.reseal_body(conn, report_id, body)
            resealed += len(legacy)
            log.info("sealed %d older report bodies with their clear columns", len(legacy))


async def tampered_reports(db: Database, cipher: Cipher, repo: ReportRepository | None = None) -> list[str]:
    """Return the codes of reports whose clear columns no longer match their body (or whose body was
    swapped or damaged)."""
    repo = repo or ReportRepository()
    found: list[str] = []
    after = 0
    while True:
        async with db.read() as conn:
            page = await repo.after(conn, after)
        if not page:
            return found
        after = page[-1].id
        for report in page:
            try:
                cipher.decrypt(report.body, binding=body_binding(report))
            except DecryptionError:
                found.append(report.code)
