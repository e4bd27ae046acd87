"""Settings for a test's bot, and the real command line run on the same data."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

from bot.settings import SecretStr, Settings
from tests.support.backends import database_url_for

TEST_TOKEN = "123456:TEST-TOKEN"


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Build settings for a test: a data dir in tmp, the key beside it (not in it), fast polling.

    The first start on the empty database creates the key; restarts in the same tmp_path reuse it. Child
    processes (`python -m bot ...`) find it through JARCHY_KEY_FILE=<tmp_path>/keys/jarchy.key. The
    database is the SQLite file in the data dir, unless the test runs on PostgreSQL
    (tests.support.backends): then it is the test's own PostgreSQL database.
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
    database_url = database_url_for(tmp_path)
    if database_url is not None:
        values["database_url"] = database_url
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def run_jarchy(settings: Settings, *args: str, **variables: str) -> tuple[int, str]:
    """Run the real `jarchy` command line on these settings' data, with more JARCHY_<NAME> variables
    given by name; return its exit code and output."""
    env = {
        **os.environ,
        "JARCHY_DATA_DIR": str(settings.data_dir),
        "JARCHY_DATABASE_URL": settings.database_url,
        "JARCHY_KEY_FILE": str(settings.resolved_key_file),
        "JARCHY_BOT_TOKEN": TEST_TOKEN,
        **{f"JARCHY_{name.upper()}": value for name, value in variables.items()},
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, env=env, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


def free_port() -> int:
    """A port of 127.0.0.1 free right now, for a server the bot under test listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
