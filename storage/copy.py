"""Copy one installation's database into another (SQLite to PostgreSQL): every table, row by row, values
as stored. Sealed fields stay byte for byte what they were: their bindings name the row's own ids, kept.

Resumable: rows already in the target (by primary key) are left as they are, so a copy cut short is run
again and finishes. The target must be migrated to the same revision first; the source must not be written
meanwhile (the bot stopped). Verified by row counts per table; the caller checks the audit chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database
from storage.dialect import insert_or
from storage.schema import metadata

BATCH = 1_000


@dataclass
class CopyReport:
    """Rows per table: in the source, and written to the target by this run."""

    source: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)

    @property
    def mismatched(self) -> list[str]:
        """Tables whose row counts differ after the copy."""
        return [name for name, count in self.source.items() if self.target.get(name) != count]


async def copy_database(
    source: Database, target: Database, *, progress: Callable[[str, int], None] | None = None
) -> CopyReport:
    """Copy every table of the schema, parents before children; return the counts."""
    report = CopyReport()
    for table in metadata.sorted_tables:
        report.written[table.name] = await _copy_table(source, target, table, progress)
        async with source.read() as conn:
            report.source[table.name] = await _count(conn, table)
        async with target.read() as conn:
            report.target[table.name] = await _count(conn, table)
    if not target.is_sqlite:
        async with target.write() as conn:
            for table in metadata.sorted_tables:
                await _advance_sequence(conn, table)
    return report


async def _copy_table(
    source: Database, target: Database, table: Table, progress: Callable[[str, int], None] | None
) -> int:
    key = list(table.primary_key.columns)
    written = 0
    after: tuple[Any, ...] | None = None
    while True:
        query = select(table).order_by(*key).limit(BATCH)
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        async with source.read() as conn:
            rows = [dict(row) for row in (await conn.execute(query)).mappings()]
        if not rows:
            return written
        async with target.write() as conn:
            stmt = insert_or(conn, table).on_conflict_do_nothing(index_elements=[c.name for c in key])
            result = await conn.execute(stmt.returning(*key), rows)
            written += len(result.all())
        after = tuple(rows[-1][c.name] for c in key)
        if progress is not None:
            progress(table.name, written)


async def _count(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.count()).select_from(table))).scalar() or 0)


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
