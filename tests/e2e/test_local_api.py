"""JARCHY_API_LOCAL_MODE against the fake acting as a local-mode Bot API server (telegram-bot-api --local):
getFile answers with an absolute path on this disk, which is read instead of downloaded, and a file over
the public Bot API's 20 MB is taken; a path from a server not in local mode is never read."""

from __future__ import annotations

from pathlib import Path

from messages import catalogs
from tests.e2e.test_evidence_flow import send_file, stored_files, submit, walk_to_evidence
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import COORDINATORS, Person
from tests.support.settings import make_settings

T = catalogs()
MB = 1024 * 1024


async def test_local_mode_reads_the_servers_path_and_takes_a_file_over_20_mb(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    fake.local_dir = tmp_path / "telegram-bot-api"
    settings = make_settings(
        tmp_path, api_url=fake.url, coordinator_chat_id=COORDINATORS, api_local_mode=True
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        person = Person(fake, 951)
        await walk_to_evidence(fake, person)
        answer = await send_file(fake, person, b"v" * (21 * MB), name="video.mp4")
        assert T.text("en", "report.step.evidence", count=1) in answer
        assert len(stored_files(bot)) == 1
        assert fake.sent("getFile") and fake.sent("downloadFile") == []
        # The configured quota still holds: 100 MB per person by default.
        refused = await send_file(fake, person, b"w" * (80 * MB), name="long.mp4")
        assert refused.startswith(T.text("en", "evidence.person_quota", limit=100))
        await submit(person)
        await fake.wait_for("sendDocument", chat_id=COORDINATORS, timeout=30)
    finally:
        await bot.stop()


async def test_a_path_from_a_server_not_in_local_mode_is_never_read(fake: FakeBotApi, tmp_path: Path) -> None:
    fake.local_dir = tmp_path / "telegram-bot-api"
    settings = make_settings(tmp_path, api_url=fake.url, coordinator_chat_id=COORDINATORS)
    bot = RunningBot(settings)
    await bot.start()
    try:
        person = Person(fake, 952)
        await walk_to_evidence(fake, person)
        answer = await send_file(fake, person, b"%PDF-1.4 a record")
        assert answer.startswith(T.text("en", "evidence.download_failed"))
        assert stored_files(bot) == []
    finally:
        await bot.stop()
