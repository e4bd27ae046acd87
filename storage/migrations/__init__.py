"""Alembic migrations, applied at start and by `jarchy migrate`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from storage.database import Database

_HERE = Path(__file__).parent


def alembic_config() -> Config:
    """Return an Alembic config that needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    return config


async def upgrade(database: Database, revision: str = "head") -> None:
    """Apply migrations up to `revision`, then check that every foreign key still holds."""

    def _run(sync_conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)
        if sync_conn.dialect.name == "sqlite":
            broken = sync_conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left {len(broken)} rows with broken foreign keys; rolled back")

    # On SQLite, batch migrations drop and recreate tables; with foreign keys on, dropping a parent
    # table would cascade into its children (PRAGMA foreign_keys cannot change inside a transaction).
    migrator = Database.connect(database.engine.url, foreign_keys=False) if database.is_sqlite else database
    try:
        async with migrator.write() as conn:
            await conn.run_sync(_run)
    finally:
        if migrator is not database:
            await migrator.close()


async def current_revision(database: Database) -> str | None:
    """Return the database's revision, or None for an empty database."""

    def _read(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with database.read() as conn:
        return await conn.run_sync(_read)


def head_revision() -> str | None:
    """Return the newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
