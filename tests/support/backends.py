"""Which database a test runs on: the storage and end-to-end suites run once on each backend.

A test there takes the `backend` fixture (its conftest makes it autouse), parametrised by
`parametrize_backends` with "sqlite" and "postgresql". On PostgreSQL the fixture makes the test a database
of its own (tests.support.database) and files its URL under the test's tmp_path, where `make_settings`,
`BotProcess` and `run_jarchy` find it, so a test written for SQLite runs unchanged on PostgreSQL. A test
that is SQLite's by nature (it reads the file's bytes or its WAL) says so with
`@pytest.mark.sqlite_only("why")` and is generated for SQLite only.

Without JARCHY_TEST_POSTGRES_URL the PostgreSQL cases are skipped, saying why; with
JARCHY_TEST_REQUIRE_POSTGRES=1 (as .ci/run sets) they fail instead, so CI never passes by skipping them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.database import (
    POSTGRES_URL_VARIABLE,
    REQUIRE_POSTGRES_VARIABLE,
    create_postgres_database,
    drop_postgres_database,
    postgres_required,
    postgres_url,
)

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)
SQLITE_ONLY_MARK = "sqlite_only"

_databases: dict[Path, str] = {}


def parametrize_backends(metafunc: pytest.Metafunc) -> None:
    """Run a test that takes `backend` once per backend (SQLite only if it is marked sqlite_only)."""
    if "backend" not in metafunc.fixturenames:
        return
    only_sqlite = metafunc.definition.get_closest_marker(SQLITE_ONLY_MARK) is not None
    metafunc.parametrize("backend", [SQLITE] if only_sqlite else list(BACKENDS), indirect=True)


def database_url_for(tmp_path: Path) -> str | None:
    """Return the database URL filed for the test owning `tmp_path`, or None for its SQLite default."""
    return _databases.get(tmp_path)


def missing_postgres_reason() -> str:
    """Say why the PostgreSQL cases cannot run, and how to make them."""
    return (
        f"PostgreSQL cases need {POSTGRES_URL_VARIABLE}=postgresql+asyncpg://user:password@host:port/database"
        " (a role allowed to CREATE DATABASE); .ci/run sets one up"
    )


async def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Give the test its backend: nothing to do on SQLite, a database of its own on PostgreSQL."""
    name = str(getattr(request, "param", SQLITE))
    if name != POSTGRESQL:
        yield name
        return
    if postgres_url() is None:
        if postgres_required():
            pytest.fail(f"{REQUIRE_POSTGRES_VARIABLE} is set but {missing_postgres_reason()}")
        pytest.skip(missing_postgres_reason())
    url = await create_postgres_database()
    _databases[tmp_path] = url
    try:
        yield name
    finally:
        del _databases[tmp_path]
        await drop_postgres_database(url)
