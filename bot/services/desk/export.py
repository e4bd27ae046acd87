"""Exports of reports as CSV and JSON, streamed a batch at a time so size never grows memory.

Columns (both formats, in this order):
code, kind, category, status, reason, duplicate_of — what the report is and where triage left it;
occurred_at_utc, occurred_at_local, created_at_utc, created_at_local, closed_at_utc, closed_at_local —
ISO 8601 times, local ones in the organisation's zone; region, place, location ("lat,lon", rounded at
submission); assignee, acknowledged_by — display names; text, people — what the reporter wrote;
evidence_sha256 — digests of the evidence files, a digest followed by "[moved or edited]" where the file's
record does not match this report (moved here from another report, or changed after it was stored);
notes — internal notes and the conversation with the reporter, each as "time kind author: text".
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.security.bindings import note_binding
from bot.services.access.team import TeamService, member_label
from bot.services.core import Core
from bot.services.reports.body import ReportBody, ReportTampered, open_body
from bot.services.reports.evidence import BOUND, EvidenceStore
from storage.evidence import Evidence
from storage.report_queries import ReportQueries, ReportQuery
from storage.reports import Note, Report

FORMATS = ("csv", "json")
COLUMNS = (
    "code", "kind", "category", "status", "reason", "duplicate_of",
    "occurred_at_utc", "occurred_at_local", "created_at_utc", "created_at_local",
    "closed_at_utc", "closed_at_local", "region", "place", "location",
    "assignee", "acknowledged_by", "text", "people", "evidence_sha256", "notes", "integrity",
)  # fmt: skip
UNBOUND_MARK = "[moved or edited]"
# Spreadsheets run cells starting with these as formulas: such cells get a leading apostrophe (CSV only).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportSummary:
    """How many reports an export wrote."""

    rows: int


class ExportService:
    """Streams filtered reports into CSV or JSON; every export is audited."""

    def __init__(
        self,
        core: Core,
        *,
        queries: ReportQueries,
        team: TeamService,
        evidence: EvidenceStore,
    ) -> None:
        self._core = core
        self._queries = queries
        self._team = team
        self._evidence = evidence

    async def allow(self, user_id: int, query: ReportQuery, formats: Sequence[str]) -> None:
        """Check the person is an admin now and audit the export (refusals are audited too)."""
        async with self._core.gate.acting(user_id, "export", roles=("admin",)) as act:
            await self._core.audit.record(act.conn, act.actor, "export", detail=describe(query, formats))

    async def audit_cli(self, query: ReportQuery, formats: Sequence[str]) -> None:
        """Audit an export run from the server's command line."""
        async with self._core.unit_of_work() as uow:
            await uow.audit.record(uow.conn, "cli", "export", detail=describe(query, formats))
            await uow.commit()

    @asynccontextmanager
    async def files(self, directory: Path, formats: Sequence[str]) -> AsyncIterator[ExportFiles]:
        """Yield owner-only export files, deleted when the block ends, however it ends."""
        files = await asyncio.to_thread(ExportFiles, directory, formats)
        try:
            yield files
        finally:
            await asyncio.to_thread(files.remove)

    async def write(self, query: ReportQuery, outputs: Mapping[str, TextIO]) -> ExportSummary:
        """Write matching reports to each output ("csv" and/or "json"), oldest first."""
        writers = {fmt: _writer(fmt, out) for fmt, out in outputs.items()}
        rows = 0
        async with self._core.db.read() as conn:
            async for batch in self._queries.batches(conn, query):
                records = await self._records(conn, batch)
                for writer in writers.values():
                    writer.write(records)
                rows += len(batch)
        for writer in writers.values():
            writer.close()
        return ExportSummary(rows)

    async def _records(self, conn: AsyncConnection, batch: list[Report]) -> list[dict[str, Any]]:
        ids = [r.id for r in batch]
        kept = await self._evidence.rows.for_reports(conn, ids)
        notes = await self._queries.notes_for(conn, ids)
        people = [p for r in batch for p in (r.assignee, r.acknowledged_by)]
        people += [n.author for items in notes.values() for n in items]
        names = await self._team.names(conn, people)

        def label(pseudonym: str | None) -> str | None:
            return member_label(names.get(pseudonym), pseudonym) if pseudonym else None

        records = []
        for report in batch:
            try:
                body, integrity = open_body(self._core.cipher, report), "ok"
            except ReportTampered:
                # Still listed, so the gap is visible; its clear columns are not to be trusted.
                body, integrity = ReportBody(None, None, None, None), "FAILED: edited outside the bot"
            records.append(
                {
                    "code": report.code,
                    "kind": report.kind,
                    "category": report.category,
                    "status": report.status,
                    "reason": report.reason,
                    "duplicate_of": report.duplicate_of,
                    "occurred_at_utc": _utc(report.occurred_at),
                    "occurred_at_local": self._local(report.occurred_at),
                    "created_at_utc": _utc(report.created_at),
                    "created_at_local": self._local(report.created_at),
                    "closed_at_utc": _utc(report.closed_at),
                    "closed_at_local": self._local(report.closed_at),
                    "region": report.region,
                    "place": body.place,
                    "location": body.location,
                    "assignee": label(report.assignee),
                    "acknowledged_by": label(report.acknowledged_by),
                    "text": body.text,
                    "people": body.people,
                    "evidence_sha256": [self._digest(report, item) for item in kept.get(report.id, [])],
                    "notes": [self._note(report.code, n, label(n.author)) for n in notes.get(report.id, [])],
                    "integrity": integrity,
                }
            )
        return records

    def _digest(self, report: Report, item: Evidence) -> str:
        # Marked, not left out: the export is where an admin finds what to look into.
        if self._evidence.check_row(report.id, report.code, item) == BOUND:
            return item.sha256
        return f"{item.sha256} {UNBOUND_MARK}"

    def _note(self, code: str, note: Note, author: str | None) -> dict[str, Any]:
        return {
            "at_utc": _utc(note.at),
            "kind": note.kind,
            "author": author,
            "text": self._core.cipher.decrypt_text(note.body, binding=note_binding(code, note.kind)),
        }

    def _local(self, value: datetime | None) -> str | None:
        return value.astimezone(self._core.zone).isoformat(timespec="seconds") if value else None


class ExportFiles:
    """Owner-only files an export is written to, gzipped when too big to upload, always deleted after."""

    def __init__(self, directory: Path, formats: Sequence[str]) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.paths = {fmt: directory / f"export-{secrets.token_hex(8)}.{fmt}" for fmt in formats}
        self.handles: dict[str, TextIO] = {}
        for fmt, path in self.paths.items():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            self.handles[fmt] = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def fit(self, limit: int) -> dict[str, tuple[Path, str]] | None:
        """Close the files and return each as (path, suffix) within `limit` bytes, gzipping any that are
        bigger; None if even a gzipped one is too big."""
        self.close_handles()
        ready: dict[str, tuple[Path, str]] = {}
        for fmt, path in self.paths.items():
            if path.stat().st_size <= limit:
                ready[fmt] = (path, "")
                continue
            packed = path.with_suffix(path.suffix + ".gz")
            with path.open("rb") as source, gzip.open(packed, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            self.paths[f"{fmt}.gz"] = packed
            if packed.stat().st_size > limit:
                return None
            ready[fmt] = (packed, ".gz")
        return ready

    def close_handles(self) -> None:
        """Close what is still open."""
        for handle in self.handles.values():
            if not handle.closed:
                handle.close()

    def remove(self) -> None:
        """Delete every file (decrypted reports must not stay on disk)."""
        self.close_handles()
        for path in self.paths.values():
            path.unlink(missing_ok=True)


def sweep(directory: Path) -> int:
    """Delete export files a crash left behind; return how many."""
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob("export-*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def describe(query: ReportQuery, formats: Sequence[str]) -> str:
    """Return the filters and formats of an export, for the audit log (never free text)."""
    parts = [f"{name}={value}" for name, value in vars(query).items() if value is not None]
    if query.since is not None:
        parts = [p for p in parts if not p.startswith("since=")] + [f"since={_utc(query.since)}"]
    return ";".join([f"formats={','.join(formats)}", *parts])


class _Writer:
    def write(self, records: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _CsvWriter(_Writer):
    def __init__(self, out: TextIO) -> None:
        self._csv = csv.writer(out)
        self._csv.writerow(COLUMNS)

    def write(self, records: list[dict[str, Any]]) -> None:
        self._csv.writerows([[_cell(record[c]) for c in COLUMNS] for record in records])

    def close(self) -> None:
        pass


class _JsonWriter(_Writer):
    """Writes one JSON array, element by element: the document is never whole in memory."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._first = True
        out.write("[")

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._out.write("\n" if self._first else ",\n")
            self._out.write(json.dumps({c: record[c] for c in COLUMNS}, ensure_ascii=False))
            self._first = False

    def close(self) -> None:
        self._out.write("\n]\n")


def _writer(fmt: str, out: TextIO) -> _Writer:
    if fmt == "csv":
        return _CsvWriter(out)
    if fmt == "json":
        return _JsonWriter(out)
    raise ValueError(f"unknown export format {fmt!r}")


def _cell(value: Any) -> str:
    if value is None:
        text = ""
    elif isinstance(value, list) and value and isinstance(value[0], dict):  # notes
        text = "\n".join(f"{n['at_utc']} {n['kind']} {n['author'] or '—'}: {n['text']}" for n in value)
    elif isinstance(value, list) and value and isinstance(value[0], float):  # location
        text = ",".join(f"{v:g}" for v in value)
    elif isinstance(value, list):  # evidence digests
        text = ";".join(str(v) for v in value)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _utc(value: datetime | None) -> str | None:
    return value.astimezone(ZoneInfo("UTC")).isoformat(timespec="seconds") if value else None
