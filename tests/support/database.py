"""One database migrated once per process, copied into each test's data dir instead of migrating again.

Running the Alembic migrations costs about half a second a database; hundreds of tests each made one. The
template holds the schema and nothing else: no key check, no row, so the start-up key guard sees it as an
empty database and binds it to whichever key the test's bot creates or brings, exactly as on a fresh file.
The migrations themselves are still run from empty by tests/test_storage.py and by the template itself.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from bot.settings import Settings
from storage import migrations
from storage.database import Database

_lock = threading.Lock()
_template: Path | None = None


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


def _migrate_in_thread(path: Path, failures: list[BaseException]) -> None:
    try:
        asyncio.run(_migrate(path))
    except BaseException as error:
        failures.append(error)


async def _migrate(path: Path) -> None:
    database = Database.connect(f"sqlite+aiosqlite:///{path}")
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
