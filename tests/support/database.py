"""One database migrated once per process, copied for each test instead of migrating again.

Running the Alembic migrations costs about half a second a database; hundreds of tests each made one. The
template holds the schema and nothing else: no key check, no row, so the start-up key guard sees it as an
empty database and binds it to whichever key the test's bot creates or brings, exactly as on a fresh file.
The migrations themselves are still run from empty by tests/storage/test_storage.py and by the template.

On SQLite the template is a file copied into the test's data dir. On PostgreSQL (JARCHY_TEST_POSTGRES_URL,
a role allowed to create databases) each worker process migrates a template database of its own and each
test gets `CREATE DATABASE ... TEMPLATE` of it, dropped after the test; tests.support.backends says which
test runs on which.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.settings import Settings
from storage import migrations
from storage.database import Database

POSTGRES_URL_VARIABLE = "JARCHY_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_VARIABLE = "JARCHY_TEST_REQUIRE_POSTGRES"
# Every database the suite makes starts so; .ci/run drops those a killed run left behind.
POSTGRES_PREFIX = "jarchy_t_"

_lock = threading.Lock()
_template: Path | None = None
_postgres_template: str | None = None


def template_database() -> Path:
    """Return the migrated template's file, making it on first use (once per process)."""
    global _template
    with _lock:
        if _template is None:
            folder = Path(tempfile.mkdtemp(prefix="jarchy-template-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            path = folder / "template.db"
            failures: list[BaseException] = []
            # In a thread of its own: callers may be inside a running event loop (a test, a fixture).
            worker = threading.Thread(target=_migrate_in_thread, args=(path, failures))
            worker.start()
            worker.join()
            if failures:
                raise RuntimeError("migrating the template database failed") from failures[0]
            _checkpoint(path)
            _template = path
        return _template


def copy_template(target: Path) -> Path:
    """Copy the template to `target` (which must not exist yet) and return it."""
    if target.exists():
        raise FileExistsError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_database(), target)
    return target


def seed_database(settings: Settings) -> bool:
    """Put a copy of the template where these settings' SQLite database will be, if there is none yet.

    Return whether it did: a database that already exists (a restart, a test's own data) is left alone, and
    so is one that is not a SQLite file.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    return seed_file(Path(url.database))


def seed_file(target: Path) -> bool:
    """Copy the template to `target` unless a database (or what is left of one) is already there."""
    if any(Path(f"{target}{suffix}").exists() for suffix in ("", "-wal", "-shm", "-journal")):
        return False
    copy_template(target)
    return True


async def read_rows(url: str, statement: str, **params: object) -> list[tuple[Any, ...]]:
    """Run one read on a database another process may be using, as that process left it.

    The engine is disposed without Database.close()'s SQLite checkpoint, which would compete with the
    other process's writers for the lock.
    """
    database = Database.connect(url)
    try:
        async with database.read() as conn:
            return [tuple(row) for row in await conn.execute(text(statement), params)]
    finally:
        await database.dispose()


def postgres_url() -> str | None:
    """Return the PostgreSQL server the suite may make databases on (its maintenance database), if any."""
    return os.environ.get(POSTGRES_URL_VARIABLE, "").strip() or None


def postgres_required() -> bool:
    """Tell whether a missing PostgreSQL is an error here (CI) instead of a reason to skip its cases."""
    return os.environ.get(REQUIRE_POSTGRES_VARIABLE, "").strip() not in ("", "0")


async def create_postgres_database(*, migrated: bool = True) -> str:
    """Make a database for one test, a copy of the migrated template (or empty), and return its URL."""
    server = _require_postgres_url()
    source = postgres_template() if migrated else "template0"
    name = f"{POSTGRES_PREFIX}{uuid.uuid4().hex[:16]}"
    await _administer(server, f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return _database_url(server, name)


async def drop_postgres_database(url: str) -> None:
    """Drop a test's database, ending any connection a killed or unstopped bot left open."""
    name = make_url(url).database
    if not name or not name.startswith(POSTGRES_PREFIX):
        raise ValueError(f"not a test database: {name!r}")
    await _drop_database(_require_postgres_url(), name)


def postgres_template() -> str:
    """Return the name of this process's migrated template database, making it on first use."""
    global _postgres_template
    with _lock:
        if _postgres_template is None:
            server = _require_postgres_url()
            name = f"{POSTGRES_PREFIX}template_{os.getpid()}"
            _run_in_thread(_make_postgres_template(server, name))
            atexit.register(_drop_template, server, name)
            _postgres_template = name
        return _postgres_template


async def _make_postgres_template(server: str, name: str) -> None:
    await _drop_database(server, name)  # a reused pid's leftover
    await _administer(server, f'CREATE DATABASE "{name}" TEMPLATE template0')
    # Disposed before use: CREATE DATABASE ... TEMPLATE refuses a template anyone is connected to.
    await _migrate(_database_url(server, name))


def _drop_template(server: str, name: str) -> None:
    _run_in_thread(_drop_database(server, name))


async def _drop_database(server: str, name: str, *, attempts: int = 20) -> None:
    # PostgreSQL 15 counts an autovacuum worker in the database as another role's backend: without
    # pg_signal_backend (which .ci/run grants) FORCE refuses to end it. The worker is gone in moments.
    for attempt in range(attempts):
        try:
            await _administer(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except ProgrammingError as error:
            if "pg_signal_backend" not in str(error) or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)


async def _administer(server: str, statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction; one connection, closed at once.
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _database_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def _require_postgres_url() -> str:
    url = postgres_url()
    if url is None:
        raise RuntimeError(f"{POSTGRES_URL_VARIABLE} is not set")
    return url


def _run_in_thread(work: Coroutine[Any, Any, None]) -> None:
    # In a thread of its own: callers may be inside a running event loop (a test, a fixture).
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work)
        except BaseException as error:
            failures.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if failures:
        raise RuntimeError("preparing a test database failed") from failures[0]


def _migrate_in_thread(path: Path, failures: list[BaseException]) -> None:
    try:
        asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    except BaseException as error:
        failures.append(error)


async def _migrate(url: str) -> None:
    database = Database.connect(url)
    try:
        await migrations.upgrade(database)
    finally:
        await database.close()


def _checkpoint(path: Path) -> None:
    # Everything must be in the main file before it is copied: a copy without its WAL would lose tables.
    with contextlib.closing(sqlite3.connect(path)) as raw:
        busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy or (Path(f"{path}-wal").exists() and Path(f"{path}-wal").stat().st_size):
        raise RuntimeError("the template database's WAL could not be checkpointed")
