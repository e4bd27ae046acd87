"""The storage contract suite runs on every backend: SQLite, and PostgreSQL when one is given.

`db` (tests/conftest.py) is the test's migrated database on its backend; `empty_database_url` is an empty
one, for the migrations themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backends import POSTGRESQL
from tests.support.database import create_postgres_database, drop_postgres_database


@pytest.fixture(autouse=True)
def on_each_backend(backend: str) -> str:
    """Run the test once per backend."""
    return backend


@pytest.fixture
async def empty_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database on the test's backend (a SQLite file not made yet, in a new folder)."""
    if backend != POSTGRESQL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'new.db'}"
        return
    url = await create_postgres_database(migrated=False)
    try:
        yield url
    finally:
        await drop_postgres_database(url)
