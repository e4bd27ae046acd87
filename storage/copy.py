"""Copy one installation's database into another (SQLite to PostgreSQL): every table, row by row, values
as stored. Sealed fields stay byte for byte what they were: their bindings name the row's own ids, kept.

The target carries a "copy in progress" mark (COPY_MARK in bot_state) from before its first row until the
copy is verified; the bot refuses to start on a database that carries it (bot.security.key_guard). The
mark names the source (a random copy id kept in the source's bot_state, and its key check): a non-empty
target without this source's mark is refused, never merged into.

Resumable: a run again makes the target equal to the source, table by table: rows are inserted or updated
(every column) and target rows the source no longer has are deleted. The source's write lock is held for
the whole copy, so it is one snapshot and nothing writes it meanwhile. Each table's sequence is moved past
the copied ids inside the batch's own transaction. Verified by row counts and an ordered digest of every
row's columns per table; the caller checks the audit chain, then calls `finish_copy`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database
from storage.dialect import insert_or
from storage.schema import bot_state, metadata
from storage.state import StateRepository

BATCH = 1_000
COPY_MARK = "copy_in_progress"  # on the target: JSON {"copy_id", "key_check"} until the copy is verified
COPY_ID = "copy_source_id"  # on the source: the random id its copies are marked with
MOVED = "moved_to_postgresql"  # on the source, after a verified copy it was not retired by
KEY_CHECK = "key_check"  # bot.security.key_guard.KEY_CHECK (storage must not import bot)
# Marks about this database itself: never copied, compared or deleted by a copy.
LOCAL_MARKS = frozenset({COPY_MARK, COPY_ID, MOVED})


class CopyRefused(Exception):
    """The target cannot be copied into; the message says why and what to do."""


@dataclass
class CopyReport:
    """Rows per table: in the source, in the target, and written to or deleted from the target by this run."""

    source: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    source_digest: dict[str, str] = field(default_factory=dict)
    target_digest: dict[str, str] = field(default_factory=dict)

    @property
    def mismatched(self) -> list[str]:
        """Tables whose row counts or contents differ after the copy."""
        return [
            name
            for name, count in self.source.items()
            if self.target.get(name) != count or self.target_digest.get(name) != self.source_digest.get(name)
        ]


async def copy_database(
    source: Database, target: Database, *, progress: Callable[[str, int], None] | None = None
) -> CopyReport:
    """Make the target equal to the source, table by table, parents before children; return what it did."""
    mark = await _source_mark(source)
    await _claim_target(target, mark)
    report = CopyReport()
    tables = metadata.sorted_tables
    # One write transaction on the source for the whole copy: its write lock keeps a bot (or anything
    # else) from writing it meanwhile, and every table is read from the same snapshot.
    async with source.write() as src:
        # Children first: a stale child must go before the parent it names.
        for table in reversed(tables):
            report.deleted[table.name] = await _delete_stale(src, target, table)
        for table in tables:
            report.written[table.name] = await _copy_table(src, target, table, progress)
        for table in tables:
            report.source[table.name], report.source_digest[table.name] = await _digest(src, table)
            async with target.read() as conn:
                report.target[table.name], report.target_digest[table.name] = await _digest(conn, table)
    return report


async def finish_copy(target: Database) -> None:
    """Remove the target's copy mark: the copy is verified and the bot may start on it."""
    async with target.write() as conn:
        await StateRepository().delete(conn, COPY_MARK)


async def copy_mark(db: Database) -> str | None:
    """Return the database's copy mark, or None."""
    async with db.read() as conn:
        return await StateRepository().get(conn, COPY_MARK)


async def _source_mark(source: Database) -> str:
    async with source.write() as conn:
        state = StateRepository()
        copy_id = await state.put_if_absent(conn, COPY_ID, secrets.token_hex(16))
        check = await state.get(conn, KEY_CHECK)
    return json.dumps({"copy_id": copy_id, "key_check": check}, sort_keys=True)


async def _claim_target(target: Database, mark: str) -> None:
    async with target.write() as conn:
        stored = await StateRepository().get(conn, COPY_MARK)
        if stored is None:
            for table in metadata.sorted_tables:
                if (await conn.execute(select(1).select_from(table).limit(1))).first() is not None:
                    raise CopyRefused(
                        "the target database is not empty and carries no copy mark of this source; copy "
                        "into a new, empty database"
                    )
            await StateRepository().put(conn, COPY_MARK, mark)
        elif not _same_source(stored, mark):
            raise CopyRefused(
                "the target database is a copy of another database (its copy mark names another source); "
                "copy into a new, empty database"
            )


def _same_source(stored: str, mark: str) -> bool:
    """Tell whether a target's copy mark names this source: its copy id, and its key check if both have one
    (an old database gets its key check at the bot's next start, which may come between two runs)."""
    try:
        theirs, ours = json.loads(stored), json.loads(mark)
    except ValueError:
        return False
    if not isinstance(theirs, dict) or theirs.get("copy_id") != ours["copy_id"]:
        return False
    return (
        theirs.get("key_check") is None
        or ours["key_check"] is None
        or theirs["key_check"] == ours["key_check"]
    )


def _source_rows(table: Table) -> Any:
    query = select(table)
    if table is bot_state:
        query = query.where(bot_state.c.key.not_in(LOCAL_MARKS))
    return query


async def _delete_stale(src: AsyncConnection, target: Database, table: Table) -> int:
    key = list(table.primary_key.columns)
    have = {tuple(row) for row in await src.execute(select(*key))}
    deleted = 0
    after: tuple[Any, ...] | None = None
    while True:
        query = select(*key).order_by(*key).limit(BATCH)
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        async with target.read() as conn:
            keys = [tuple(row) for row in await conn.execute(query)]
        if not keys:
            return deleted
        stale = [k for k in keys if k not in have]
        if table is bot_state:
            stale = [k for k in stale if k[0] not in LOCAL_MARKS]
        if stale:
            async with target.write() as conn:
                await conn.execute(delete(table).where(tuple_(*key).in_(stale)))
            deleted += len(stale)
        after = keys[-1]


async def _copy_table(
    src: AsyncConnection, target: Database, table: Table, progress: Callable[[str, int], None] | None
) -> int:
    key = list(table.primary_key.columns)
    names = [c.name for c in key]
    written = 0
    after: tuple[Any, ...] | None = None
    while True:
        query = _source_rows(table).order_by(*key).limit(BATCH)
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        rows = [dict(row) for row in (await src.execute(query)).mappings()]
        if not rows:
            return written
        keys = [tuple(row[n] for n in names) for row in rows]
        async with target.write() as conn:
            present = {
                tuple(row[n] for n in names): _canonical(row)
                for row in (await conn.execute(select(table).where(tuple_(*key).in_(keys)))).mappings()
            }
            changed = [row for row, k in zip(rows, keys, strict=True) if present.get(k) != _canonical(row)]
            if changed:
                stmt = insert_or(conn, table)
                others = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in names}
                stmt = (
                    stmt.on_conflict_do_update(index_elements=names, set_=others)
                    if others
                    else stmt.on_conflict_do_nothing(index_elements=names)
                )
                await conn.execute(stmt, changed)
                written += len(changed)
            if conn.dialect.name == "postgresql":
                # In the batch's own transaction: a copy cut short must not leave a sequence behind ids
                # already copied.
                await _advance_sequence(conn, table)
        after = keys[-1]
        if progress is not None:
            progress(table.name, written)


async def _digest(conn: AsyncConnection, table: Table) -> tuple[int, str]:
    """Return the row count and a SHA-256 of every row's columns, in primary key order."""
    digest, count = hashlib.sha256(), 0
    key = list(table.primary_key.columns)
    query = _source_rows(table).order_by(*key)
    for row in (await conn.execute(query)).mappings():
        digest.update(_canonical(row).encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


def _canonical(row: Any) -> str:
    """Return one row's columns as text that is the same whichever backend it was read from."""
    return json.dumps([[name, _plain(row[name])] for name in sorted(row.keys())], separators=(",", ":"))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": bytes(value).hex()}
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return {"t": aware.astimezone(UTC).isoformat()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    return value


async def _advance_sequence(conn: AsyncConnection, table: Table) -> None:
    # Rows came with their ids: the sequence behind an autoincrement id must start after the largest, or
    # the bot's next insert collides with a copied row.
    key = list(table.primary_key.columns)
    if len(key) != 1 or not key[0].autoincrement or key[0].type.python_type is not int:
        return
    column = key[0].name
    sequence = (
        await conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column})
    ).scalar()
    if sequence is None:
        return
    await conn.execute(
        text(f"SELECT setval(:s, COALESCE((SELECT max({column}) FROM {table.name}), 0) + 1, false)"),  # noqa: S608 - names from the schema
        {"s": sequence},
    )


async def mark_moved(source: Database, at: datetime) -> None:
    """Mark the source as copied away: the bot refuses to start on it from now on."""
    async with source.write() as conn:
        await StateRepository().put(conn, MOVED, at.astimezone(UTC).isoformat())


def retire_sqlite_file(path: Path) -> list[Path]:
    """Empty a SQLite database (secure delete, every table, VACUUM, WAL truncated), then delete its files."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as con:
        con.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten with zeros, not just freed
        con.execute("PRAGMA foreign_keys=OFF")
        names = [
            row[0]
            for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        con.execute("BEGIN IMMEDIATE")
        for name in names:
            con.execute(f'DELETE FROM "{name}"')  # noqa: S608 - names from the file's own schema
        con.execute("COMMIT")
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    removed = []
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.unlink()
            removed.append(file)
    return removed
