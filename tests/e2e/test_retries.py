"""Every coordinator action happens once per update: a reply that times out after the action committed is
not retried, an update run again (after a crash, or a done-mark that could not be written) adds no second
note, view or question, and retries are bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.app import dispatch_update
from bot.ptb_request import AiohttpRequest
from bot.runtime.clock import SystemClock
from bot.runtime.inbox import Dispatch, DispatchResult, DurableInbox
from bot.services.contact import QUESTION_KIND
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from messages import catalogs
from storage.inbox import InboxRepository
from tests.e2e.reporting import report_settings
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN
from tests.workspace_seed import Seed, seed_reports

__all__ = ["report_settings"]

REPORTER = 6201
ALREADY = catalogs().text("en", "update.already_done")


@pytest.fixture
async def desk(fake: FakeBotApi, report_settings: Settings) -> AsyncIterator[tuple[RunningBot, str]]:
    """A running bot whose replies time out after one second, and a contactable report."""
    bot = RunningBot(report_settings)
    await bot.start()
    await fake.wait_for("setMyCommands", timeout=15)
    assert bot.app is not None
    request = bot.app.bot.request
    assert isinstance(request, AiohttpRequest)
    # Telegram's silence is waited for ten seconds in production; one keeps these tests short.
    request._read_timeout = 1.0
    services = bot.app_services()
    await services.users.seen(REPORTER, "en")
    reporter = services.pseudonyms.of_user(REPORTER)
    (code,) = await seed_reports(
        services.db, services.cipher, [Seed(reporter=reporter, chat=REPORTER)], services.clock.now()
    )
    yield bot, code
    await bot.stop()


async def count(services: Services, sql: str, **params: Any) -> int:
    async with services.db.read() as conn:
        return int((await conn.execute(text(sql), params)).scalar() or 0)


async def audited(services: Services, action: str) -> int:
    return await count(
        services, "SELECT count(*) FROM audit_log WHERE action = :a AND outcome = 'ok'", a=action
    )


async def wait_until_handled(services: Services, update_id: int, timeout: float = 15.0) -> None:
    """Wait until the inbox no longer holds the update as pending."""
    for _ in range(int(timeout / 0.1)):
        pending = await count(
            services, "SELECT count(*) FROM inbox WHERE update_id = :u AND status = 'pending'", u=update_id
        )
        stored = await count(services, "SELECT count(*) FROM inbox WHERE update_id = :u", u=update_id)
        if stored and not pending:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"update {update_id} still pending")


async def test_a_note_whose_reply_times_out_is_added_once(
    fake: FakeBotApi, desk: tuple[RunningBot, str]
) -> None:
    bot, code = desk
    services = bot.app_services()
    # Telegram takes the reply but never answers: the note is already in the database by then.
    fake.timeout_next("sendMessage", delay=3.0, deliver=True)
    update = fake.add_message(user_id=ADMIN, text=f"/note {code} the lawyer is on the way")
    await wait_until_handled(services, update["update_id"])
    # A retry would keep the update pending for later: none is, and a done update never runs again.
    assert (await bot.quiet(fake)).inbox_later == 0
    notes = await count(services, "SELECT count(*) FROM report_notes WHERE kind = 'note'")
    assert notes == 1
    assert await audited(services, "desk.note") == 1
    status = await count(
        services,
        "SELECT count(*) FROM inbox WHERE update_id = :u AND status = 'done' AND attempts = 0",
        u=update["update_id"],
    )
    assert status == 1


async def test_a_report_view_whose_reply_times_out_is_shown_and_audited_once(
    fake: FakeBotApi, desk: tuple[RunningBot, str]
) -> None:
    bot, code = desk
    services = bot.app_services()
    fake.timeout_next("sendMessage", delay=3.0, deliver=True)
    update = fake.add_message(user_id=ADMIN, text=f"/r {code}")
    await wait_until_handled(services, update["update_id"])
    # A retry would keep the update pending for later: none is, and a done update never runs again.
    assert (await bot.quiet(fake)).inbox_later == 0
    assert await audited(services, "desk.view") == 1
    views = [c for c in fake.sent("sendMessage", chat_id=ADMIN) if code in str(c.params.get("text", ""))]
    assert len(views) == 1


async def test_an_update_run_again_after_a_crash_acts_once(
    fake: FakeBotApi, desk: tuple[RunningBot, str]
) -> None:
    """The inbox runs an update again when the process stopped after its action but before the done-mark:
    the second run finds the action recorded, repeats nothing and says so."""
    bot, code = desk
    services = bot.app_services()
    assert bot.app is not None
    commands = {
        "note": f"/note {code} a second pair of eyes",
        "view": f"/r {code}",
        "ask": f"/ask {code} Are you safe now?",
    }
    before = {
        "notes": await count(services, "SELECT count(*) FROM report_notes"),
        "questions": await count(services, "SELECT count(*) FROM outbox WHERE kind = :k", k=QUESTION_KIND),
    }
    for command in commands.values():
        update = fake.add_message(user_id=ADMIN, text=command)
        await wait_until_handled(services, update["update_id"])
        await bot.quiet(fake)  # some answers go through the outbox
        sent = len(fake.sent("sendMessage", chat_id=ADMIN))
        result = await dispatch_update(bot.app, update)
        assert result == DispatchResult(Dispatch.DONE)
        again = fake.sent("sendMessage", chat_id=ADMIN)[sent:]
        assert [c.params["text"] for c in again] == [ALREADY], command
    notes = await count(services, "SELECT count(*) FROM report_notes")
    questions = await count(services, "SELECT count(*) FROM outbox WHERE kind = :k", k=QUESTION_KIND)
    # /note adds one note and /ask one question note; each once.
    assert notes - before["notes"] == 2
    assert questions - before["questions"] == 1
    assert await audited(services, "desk.note") == 1
    assert await audited(services, "desk.view") == 1
    assert await audited(services, "contact.ask") == 1


class _MarksFail(InboxRepository):
    """The inbox's SQL, with done-marks failing as they do while another writer holds the lock."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def mark_done(self, conn: AsyncConnection, update_ids: Sequence[int], now: datetime) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("UPDATE inbox …", {}, Exception("database is locked"))
        await super().mark_done(conn, update_ids, now)


async def test_a_done_mark_that_cannot_be_written_never_runs_the_update_again(
    fake: FakeBotApi, report_settings: Settings
) -> None:
    runs: list[int] = []

    async def handler(update: dict[str, Any]) -> DispatchResult:
        runs.append(update["update_id"])
        return DispatchResult(Dispatch.DONE)

    clock = SystemClock()
    services = await open_services(report_settings, clock, build_limiter(report_settings, clock))
    try:
        # Five failures exhaust the in-line attempts; the mark is written at a later pass.
        repo = _MarksFail(failures=6)
        inbox = DurableInbox(
            db=services.db,
            repo=repo,
            api=services.api,
            cipher=services.cipher,
            clock=services.clock,
            dispatch=handler,
        )
        update = fake.add_message(user_id=6202, text="/start")
        await inbox.fetch_once(timeout_s=0)
        for _ in range(4):
            await inbox.dispatch_pending()
        assert runs == [update["update_id"]]
        assert repo.failures == 0
        done = await count(
            services, "SELECT count(*) FROM inbox WHERE update_id = :u AND status = 'done'", u=runs[0]
        )
        assert done == 1
    finally:
        await services.close()


async def test_telegram_never_answering_is_retried_a_bounded_number_of_times(
    fake: FakeBotApi, report_settings: Settings
) -> None:
    """A handler whose reply keeps timing out (and commits nothing) is tried inbox_max_attempts times."""
    from dataclasses import replace

    settings = replace(report_settings, inbox_max_attempts=2)
    bot = RunningBot(settings)
    await bot.start()
    try:
        await fake.wait_for("setMyCommands", timeout=15)
        assert bot.app is not None
        request = bot.app.bot.request
        assert isinstance(request, AiohttpRequest)
        request._read_timeout = 0.5
        fake.timeout_next("sendMessage", 10, delay=2.0, deliver=False)
        update = fake.add_message(user_id=6203, text="/help")
        services = bot.app_services()
        for _ in range(100):
            failed = await count(
                services,
                "SELECT count(*) FROM inbox WHERE update_id = :u AND status = 'failed'",
                u=update["update_id"],
            )
            if failed:
                break
            await asyncio.sleep(0.1)
        assert failed == 1
    finally:
        await bot.stop()


async def test_a_revoked_coordinators_queued_question_never_reaches_the_reporter(
    fake: FakeBotApi, desk: tuple[RunningBot, str]
) -> None:
    """An infiltrator asks a reporter to meet; revoked before the question went out (the reporter's chat
    was busy), the question is withdrawn with the role."""
    bot, code = desk
    services = bot.app_services()
    rex = 6204
    await services.users.seen(rex, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(rex, invite.token)
    await services.team.set_name(rex, "Rex")
    fake.fail_chat(REPORTER)  # the question waits in the outbox
    await services.contact.ask(rex, code, "Meet me at the back gate at 18:00")
    await services.team.revoke(ADMIN, "Rex")
    fake.heal_chat(REPORTER)
    await bot.quiet(fake)
    assert not [c for c in fake.sent("sendMessage", chat_id=REPORTER) if "back gate" in str(c.params)]
    pending = await count(
        services, "SELECT count(*) FROM outbox WHERE kind = :k AND status = 'pending'", k=QUESTION_KIND
    )
    assert pending == 0
    async with services.db.read() as conn:
        detail = (
            await conn.execute(text("SELECT detail FROM audit_log WHERE action = 'team.revoke'"))
        ).scalar_one()
    assert detail.endswith("questions 1")
