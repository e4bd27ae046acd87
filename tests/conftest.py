"""Shared fixtures: a real migrated SQLite file per test, keys, settings."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.runtime.clock import FakeClock
from bot.security import Cipher, DataKey, Pseudonymizer, create_key_file
from bot.settings import SecretStr, Settings
from storage import migrations
from storage.database import Database

TEST_TOKEN = "123456:TEST-TOKEN"

# python-telegram-bot warns when RetryAfter.retry_after is read as an int; the bot opts into timedelta.
os.environ.setdefault("PTB_TIMEDELTA", "true")


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Build settings for a test: a data dir in tmp, the key beside it (not in it), fast polling.

    The first start on the empty database creates the key; restarts in the same tmp_path reuse it. Child
    processes (`python -m bot ...`) find it through JARCHY_KEY_FILE=<tmp_path>/keys/jarchy.key.
    """
    values: dict[str, object] = {
        "bot_token": SecretStr(TEST_TOKEN),
        "data_dir": tmp_path / "data",
        "key_file": tmp_path / "keys" / "jarchy.key",
        # Nothing on the machine running the tests (a docker secret, a user's key) may be picked up.
        "secrets_dir": tmp_path / "secrets",
        "config_dir": tmp_path / "config",
        "polling_timeout_s": 1,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


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
    """A real SQLite file with every migration applied."""
    database = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
    await migrations.upgrade(database)
    yield database
    await database.close()


async def run_jarchy(settings: Settings, *args: str) -> tuple[int, str]:
    """Run the real `jarchy` command line on these settings' data; return its exit code and output."""
    env = {
        **os.environ,
        "JARCHY_DATA_DIR": str(settings.data_dir),
        "JARCHY_KEY_FILE": str(settings.resolved_key_file),
        "JARCHY_BOT_TOKEN": TEST_TOKEN,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, env=env, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo the logging `bot.cli.main` sets up: its handler writes to this test's captured stderr, closed
    after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
