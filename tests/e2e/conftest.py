"""End-to-end fixtures: the real bot (real HTTP, real SQLite file) against the local fake Bot API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_application
from bot.context import JarchyApp
from bot.runner import run_polling
from bot.settings import Settings
from bot.wiring import Services
from tests.conftest import TEST_TOKEN, make_settings
from tests.fakebot import FakeBotApi


class RunningBot:
    """The whole bot in a task of the test's loop, started and stopped like a process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.app: JarchyApp | None = None

    async def start(self) -> None:
        """Start polling and delivering."""
        self._stop = asyncio.Event()
        self.app = build_application(self.settings)
        self._task = asyncio.create_task(run_polling(self.settings, stop=self._stop, app=self.app))
        await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop gracefully and surface any error the bot died of."""
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        await asyncio.wait_for(task, timeout=20)

    def app_services(self) -> Services:
        """Return the running bot's services (for tests that drive a periodic job by hand)."""
        services: Services | None = self.app.bot_data.services if self.app is not None else None
        if services is None:
            raise RuntimeError("the bot has not started yet")
        return services

    async def restart(self) -> None:
        """Stop and start again on the same data."""
        await self.stop()
        await self.start()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """A fake Telegram on 127.0.0.1."""
    async with FakeBotApi(TEST_TOKEN) as server:
        yield server


@pytest.fixture
def bot_settings(tmp_path: Path, fake: FakeBotApi) -> Settings:
    """Settings pointing the bot at the fake server, with a data dir of its own."""
    return make_settings(tmp_path, api_url=fake.url)


@pytest.fixture
async def bot(bot_settings: Settings) -> AsyncIterator[RunningBot]:
    """The running bot."""
    running = RunningBot(bot_settings)
    await running.start()
    yield running
    await running.stop()


def reply_texts(fake: FakeBotApi, chat_id: int) -> list[str]:
    """Return the texts the bot sent to a chat, in order."""
    return [str(call.params.get("text", "")) for call in fake.sent("sendMessage", chat_id=chat_id)]


async def next_reply(fake: FakeBotApi, chat_id: int, count: int = 1, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until the bot has sent `count` messages to the chat; return the last one's parameters."""
    calls = await fake.wait_for("sendMessage", chat_id=chat_id, count=count, timeout=timeout)
    return calls[-1].params


class BotProcess:
    """`python -m bot run` as a real child process, for kill -9 and log-capture tests."""

    def __init__(
        self, fake: FakeBotApi, data_dir: Path, *, output: Path | None = None, **settings: str
    ) -> None:
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            # Run the code of this checkout, whatever is installed.
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "PTB_TIMEDELTA": "true",
            "JARCHY_BOT_TOKEN": TEST_TOKEN,
            "JARCHY_API_URL": fake.url,
            "JARCHY_DATA_DIR": str(data_dir),
            "JARCHY_KEY_FILE": str(data_dir.parent / "keys" / "jarchy.key"),  # as make_settings puts it
            "JARCHY_POLLING_TIMEOUT_S": "1",
            "JARCHY_LOG_LEVEL": "WARNING",
            **{f"JARCHY_{name.upper()}": value for name, value in settings.items()},
        }
        self.cwd = data_dir.parent
        self.output = output
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the bot."""
        sink = self.output.open("ab") if self.output is not None else subprocess.DEVNULL
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", env=self.env, cwd=self.cwd, stdout=sink, stderr=sink
            )
        finally:
            if not isinstance(sink, int):
                sink.close()

    async def kill(self) -> None:
        """Kill it with SIGKILL: no cleanup of any kind runs."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        """Stop it with SIGTERM, as a service manager would."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 30)
