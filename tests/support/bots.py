"""The bot under test: in a task of the test's own loop, or as a real `python -m bot run` child process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from bot.app import build_application
from bot.context import JarchyApp
from bot.runner import run_polling, run_webhook
from bot.settings import Settings
from bot.wiring import Services
from tests.fakebot import FakeBotApi
from tests.support.backends import database_url_for
from tests.support.barrier import Pending, quiet
from tests.support.database import seed_database, seed_file
from tests.support.settings import TEST_TOKEN


class RunningBot:
    """The whole bot in a task of the test's loop, started and stopped like a process.

    Its first start finds the migrated template database in the data dir (unless `seed` is False or the
    database already exists), so start-up only checks the migrations instead of running them all.
    """

    def __init__(self, settings: Settings, *, seed: bool = True) -> None:
        self.settings = settings
        self.seed = seed
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.app: JarchyApp | None = None

    async def start(self) -> None:
        """Start polling (or serving the webhook, when the settings name one) and delivering."""
        if self.seed:
            seed_database(self.settings)
        self._stop = asyncio.Event()
        self.app = build_application(self.settings)
        run = run_webhook if self.settings.webhook_url else run_polling
        self._task = asyncio.create_task(
            run(self.settings, stop=self._stop, app=self.app, on_app=self._use_app)
        )
        await asyncio.sleep(0)

    def _use_app(self, app: JarchyApp) -> None:
        # A switch to a backup bot starts a new Application in the same run.
        self.app = app

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

    async def started_services(self, timeout: float = 20.0) -> Services:
        """Wait until the bot has opened its services (post_init ran) and return them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            services: Services | None = self.app.bot_data.services if self.app is not None else None
            if services is not None:
                return services
            if self._task is not None and self._task.done():
                self._task.result()  # the bot died starting: its error is the test's
                raise RuntimeError("the bot stopped before it started")
            if loop.time() > deadline:
                raise TimeoutError(f"the bot did not start within {timeout} s")
            await asyncio.sleep(0.01)

    async def quiet(self, fake: FakeBotApi, *, timeout: float = 15.0) -> Pending:
        """Wait until this bot has handled every update and sent everything due (tests.support.barrier)."""
        return await quiet(fake, self.app_services(), timeout=timeout)

    async def restart(self) -> None:
        """Stop and start again on the same data."""
        await self.stop()
        await self.start()


class BotProcess:
    """`python -m bot run` as a real child process, for kill -9 and log-capture tests.

    Its database is the SQLite file in `data_dir`, or the test's PostgreSQL database when the test runs on
    PostgreSQL (filed under `data_dir`'s parent, the test's tmp_path, as make_settings puts it).
    """

    def __init__(
        self,
        fake: FakeBotApi,
        data_dir: Path,
        *,
        output: Path | None = None,
        **settings: str,
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
        # The allocator's arena cap, passed on when set, so bench/soak.py can measure memory with and
        # without it (the Dockerfile sets it).
        if "MALLOC_ARENA_MAX" in os.environ:
            self.env["MALLOC_ARENA_MAX"] = os.environ["MALLOC_ARENA_MAX"]
        database_url = database_url_for(data_dir.parent)
        if database_url is not None:
            self.env.setdefault("JARCHY_DATABASE_URL", database_url)
        self.data_dir = data_dir
        # The first start finds the migrated template (see tests.support.database) unless told of another
        # database (a PostgreSQL one is made from the template already).
        self.seed = "JARCHY_DATABASE_URL" not in self.env
        self.cwd = data_dir.parent
        self.output = output
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the bot."""
        if self.seed:
            seed_file(self.data_dir / "jarchy.db")
        sink = self.output.open("ab") if self.output is not None else subprocess.DEVNULL
        try:
            # JARCHY_BENCH_PROFILE=FILE runs the bot under cProfile (written when it stops), for bench/.
            profile = os.environ.get("JARCHY_BENCH_PROFILE")
            runner = ["-m", "cProfile", "-o", profile] if profile else []
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *runner,
                "-m",
                "bot",
                "run",
                env=self.env,
                cwd=self.cwd,
                stdout=sink,
                stderr=sink,
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
