"""The webhook server on its own, in front of an inbox that only keeps what it is given."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.webhook import SECRET_HEADER, WebhookServer
from storage.database import Database
from tests.support.settings import free_port

SECRET = "s" * 40
REFUSED = re.compile(r"refused (\d+) webhook request")


class _Inbox:
    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []

    async def accept(self, update: dict[str, Any]) -> bool:
        self.got.append(update)
        return True


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[WebhookServer, _Inbox, str]]:
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    inbox, port = _Inbox(), free_port()
    server = WebhookServer(
        inbox=inbox,
        db=db,
        secret=SECRET,
        path="/hook",
        listen=("127.0.0.1", port),
        refusal_log_every_s=0.3,
    )
    await server.start()
    try:
        yield server, inbox, f"http://127.0.0.1:{port}/hook"
    finally:
        await server.stop()
        await db.close()


async def _post(url: str, body: bytes, secret: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={SECRET_HEADER: secret}) as response,
    ):
        return response.status


def _refused(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [int(m.group(1)) for r in caplog.records if (m := REFUSED.search(r.getMessage()))]


@pytest.mark.sqlite_only("no database is used")
async def test_a_burst_of_refused_requests_always_reaches_the_log(
    served: tuple[WebhookServer, _Inbox, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, inbox, url = served
    caplog.set_level(logging.WARNING, logger="bot.webhook")
    for _ in range(3):
        assert await _post(url, b'{"update_id": 1}', "wrong") == 403
    assert _refused(caplog)[0] == 1  # the first at once; the rest counted
    # The rest of the burst is logged once the interval is over, without waiting for another refusal.
    await asyncio.sleep(1.0)
    assert sum(_refused(caplog)) == 3
    assert await _post(url, b'{"update_id": 1}', "wrong") == 403
    await server.stop()  # and what is counted at the stop
    assert sum(_refused(caplog)) == 4
    assert inbox.got == []


@pytest.mark.sqlite_only("no database is used")
async def test_a_body_nested_too_deep_is_refused_with_400_not_an_error(
    served: tuple[WebhookServer, _Inbox, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, inbox, url = served
    caplog.set_level(logging.DEBUG)
    assert await _post(url, b"[" * 200_000, SECRET) == 400
    assert await _post(url, b'{"update_id": 7, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", SECRET) == 400
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert await _post(url, b'{"update_id": 9223372036854775808}', SECRET) == 400  # 2**63: fits no column
    assert await _post(url, b'{"update_id": 8}', SECRET) == 200
    assert inbox.got == [{"update_id": 8}]
