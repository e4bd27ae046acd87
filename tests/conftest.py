"""Shared fixtures: a real migrated database per test (SQLite, or PostgreSQL where a suite asks), keys,
settings."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.runtime.clock import FakeClock
from bot.security import Cipher, DataKey, Pseudonymizer, create_key_file
from storage.database import Database
from tests.support.backends import (
    SQLITE_ONLY_MARK,
    backend_fixture,
    database_url_for,
    missing_postgres_reason,
    parametrize_backends,
)
from tests.support.database import REQUIRE_POSTGRES_VARIABLE, copy_template, postgres_required, postgres_url

# Unit tests import these from here; they live in tests/support so that bench/ can use them too.
from tests.support.settings import TEST_TOKEN, make_settings, run_jarchy

__all__ = ["TEST_TOKEN", "make_settings", "run_jarchy"]

# python-telegram-bot warns when RetryAfter.retry_after is read as an int; the bot opts into timedelta.
os.environ.setdefault("PTB_TIMEDELTA", "true")


def pytest_configure(config: pytest.Config) -> None:
    """Register the backend mark; refuse to start where PostgreSQL is required but not configured."""
    config.addinivalue_line(
        "markers", f"{SQLITE_ONLY_MARK}(reason): the test is SQLite's by nature; it is not run on PostgreSQL"
    )
    if postgres_required() and postgres_url() is None:
        raise pytest.UsageError(f"{REQUIRE_POSTGRES_VARIABLE} is set but {missing_postgres_reason()}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes `backend` on each backend (tests.support.backends)."""
    parametrize_backends(metafunc)


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The test's backend, "sqlite" or "postgresql" (on PostgreSQL, with a database of its own)."""
    async for name in backend_fixture(request, tmp_path):
        yield name


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says."""
    return FakeClock()


@pytest.fixture
def key(tmp_path: Path) -> DataKey:
    """A fresh data key in a file with owner-only permissions."""
    return create_key_file(tmp_path / "test.key")


@pytest.fixture
def cipher(key: DataKey) -> Cipher:
    """Field encryption under the test key."""
    return Cipher(key)


@pytest.fixture
def pseudonyms(key: DataKey) -> Pseudonymizer:
    """Pseudonyms under the test key."""
    return Pseudonymizer(key)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A real database with every migration applied (copied from the session's template).

    SQLite unless the test runs on PostgreSQL (its `backend` fixture, autouse in the storage and
    end-to-end suites, has then filed a database of its own); tests/storage migrates from empty.
    """
    url = database_url_for(tmp_path) or f"sqlite+aiosqlite:///{copy_template(tmp_path / 'test.db')}"
    database = Database.connect(url)
    yield database
    await database.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo the logging `bot.cli.main` sets up: its handler writes to this test's captured stderr, closed
    after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
