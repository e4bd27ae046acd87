"""Shared fixtures: a real migrated SQLite file per test, keys, settings."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.runtime.clock import FakeClock
from bot.security import Cipher, DataKey, Pseudonymizer, create_key_file
from storage.database import Database
from tests.support.database import copy_template

# Unit tests import these from here; they live in tests/support so that bench/ can use them too.
from tests.support.settings import TEST_TOKEN, make_settings, run_jarchy

__all__ = ["TEST_TOKEN", "make_settings", "run_jarchy"]

# python-telegram-bot warns when RetryAfter.retry_after is read as an int; the bot opts into timedelta.
os.environ.setdefault("PTB_TIMEDELTA", "true")


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
    """A real SQLite file with every migration applied (copied from the session's template)."""
    # A copy of the template migrated once per session; tests/test_storage.py migrates from empty.
    database = Database.connect(f"sqlite+aiosqlite:///{copy_template(tmp_path / 'test.db')}")
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
