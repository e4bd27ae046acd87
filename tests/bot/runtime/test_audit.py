"""The audit chain cannot be cut quietly: its head reaches every admin in private after each role change and
daily, `verify --expect-head` proves a kept head is still in the chain, and a database in use never begins a
new chain without marking the break and telling the admins."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from bot.runtime.audit import ANCHOR_EVERY, HEAD_DELAY, HEAD_KIND
from bot.runtime.clock import FakeClock
from bot.runtime.outbox import NOTICE_KIND
from bot.security.bindings import payload_binding
from bot.services.access.team import TeamError
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from messages import catalogs
from storage.database import Database
from storage.schema import outbox
from tests.conftest import TEST_TOKEN, make_settings, run_jarchy
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.workspace_seed import Seed, seed_reports

ADMIN, OTHER_ADMIN = 5001, 5002
AIDA, BEK = 6001, 6002
COORDINATORS = -100777
NOW = datetime.fromisoformat("2026-11-20T06:00:00+00:00")
T = catalogs()
HEAD_IN_TEXT = re.compile(r"<code>([0-9a-f]{64})</code>")


@pytest.fixture
def clock() -> FakeClock:
    """The services' clock."""
    return FakeClock(NOW)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Two admins from settings and a coordinators' chat."""
    return make_settings(
        tmp_path, admin_ids=frozenset({ADMIN, OTHER_ADMIN}), coordinator_chat_id=COORDINATORS
    )


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[Services]:
    """The real services on a fake clock."""
    opened = await start(settings, clock)
    yield opened
    await opened.close()


async def start(settings: Settings, clock: FakeClock) -> Services:
    """Start the services as the bot does (migrations, bootstrap admins, the chain's first entry)."""
    return await open_services(settings, clock, build_limiter(settings, clock))


async def join(services: Services, user_id: int) -> None:
    """Make a coordinator the way people become one."""
    await services.users.seen(user_id, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(user_id, invite.token)


async def queued(services: Services, kind: str, status: str = "pending") -> list[dict[str, Any]]:
    """Return outbox rows of a kind and status, oldest first, with their decrypted parameters."""
    async with services.db.read() as conn:
        rows = (
            await conn.execute(
                select(outbox).where(outbox.c.kind == kind, outbox.c.status == status).order_by(outbox.c.id)
            )
        ).all()
    return [
        {
            "due_at": row.due_at,
            "recipient": row.recipient,
            "params": (
                services.cipher.decrypt_json(row.payload, binding=payload_binding(row.uid))
                if row.payload is not None
                else None
            ),
        }
        for row in rows
    ]


async def every_head(services: Services) -> list[str]:
    """Return the status of every head message ever queued."""
    async with services.db.read() as conn:
        rows = await conn.execute(select(outbox.c.status).where(outbox.c.kind == HEAD_KIND))
        return [str(status) for status in rows.scalars()]


def head_of(row: dict[str, Any]) -> str:
    """Return the hash a head message carries."""
    found = HEAD_IN_TEXT.search(row["params"]["text"])
    assert found is not None, row["params"]["text"]
    return found.group(1)


async def sql(db: Database, *statements: str, **params: object) -> None:
    """Tamper with the database as someone holding the disk would."""
    async with db.write() as conn:
        for statement in statements:
            await conn.execute(text(statement), params)


async def seal(db: Database) -> str:
    """Return the stored seal."""
    async with db.read() as conn:
        value = (await conn.execute(text("SELECT value FROM bot_state WHERE key = 'audit_head'"))).scalar()
    assert value is not None
    return str(value)


async def actions(db: Database) -> list[tuple[str, str | None]]:
    """Return (action, detail) of every audit entry, oldest first."""
    async with db.read() as conn:
        rows = await conn.execute(text("SELECT action, detail FROM audit_log ORDER BY id"))
        return [(r.action, r.detail) for r in rows]


async def jarchy(settings: Settings, *args: str) -> tuple[int, str]:
    """Run the real `jarchy` command line on the data; return its exit code and output."""
    return await run_jarchy(settings, *args)


# --------------------------------------------------------------------------------------- sending the head


async def test_every_admin_gets_the_head_in_private_after_a_role_change(
    services: Services, clock: FakeClock
) -> None:
    await join(services, AIDA)
    heads = await queued(services, HEAD_KIND)
    assert sorted(row["params"]["chat_id"] for row in heads) == [ADMIN, OTHER_ADMIN]
    verdict = await services.audit.verify()
    assert {head_of(row) for row in heads} == {verdict.head}
    message = heads[0]["params"]["text"]
    assert f"entry {verdict.entries}," in message and T.text("en", "audit.head_why_team") in message
    # A hash and nothing else: no name, pseudonym or Telegram id of whoever changed.
    aida = services.pseudonyms.of_user(AIDA)
    assert aida[:8] not in message and str(AIDA) not in message
    assert {row["due_at"] for row in heads} == {NOW + HEAD_DELAY}

    # Another change before those went out: the newer head replaces them (it vouches for the older), due
    # when they were, so a stream of changes cannot keep pushing the send back.
    clock.advance(30)
    await services.team.revoke(ADMIN, aida[:10])
    assert len(await queued(services, HEAD_KIND, "cancelled")) == 2
    heads = await queued(services, HEAD_KIND)
    assert {head_of(row) for row in heads} == {(await services.audit.verify()).head}
    assert {row["due_at"] for row in heads} == {NOW + HEAD_DELAY}
    # Once those are due, the next change waits its own short delay.
    clock.advance(HEAD_DELAY.total_seconds())
    await join(services, BEK)
    assert {row["due_at"] for row in await queued(services, HEAD_KIND)} == {clock.now() + HEAD_DELAY}


async def test_a_refused_join_changes_no_role_and_sends_no_head(services: Services) -> None:
    await services.users.seen(AIDA, "en")
    with pytest.raises(TeamError, match=r"team\.invite_unknown"):
        await services.team.join(AIDA, "inv_" + "x" * 30)
    assert not await queued(services, HEAD_KIND)


async def test_an_admin_removed_from_the_settings_is_a_role_change_at_start(
    settings: Settings, clock: FakeClock
) -> None:
    await (await start(settings, clock)).close()
    services = await start(replace(settings, admin_ids=frozenset({ADMIN})), clock)
    try:
        heads = await queued(services, HEAD_KIND)
        assert [row["params"]["chat_id"] for row in heads] == [ADMIN]
        assert (await actions(services.db))[-1] == ("team.admin_removed", "not in JARCHY_ADMIN_IDS")
        assert head_of(heads[0]) == (await services.audit.verify()).head
    finally:
        await services.close()


async def test_the_head_goes_out_daily_while_it_changes(services: Services, clock: FakeClock) -> None:
    assert await services.audit.anchor_daily() == 0, "a chain younger than a day"
    clock.advance(ANCHOR_EVERY.total_seconds())
    assert await services.audit.anchor_daily() == 2
    heads = await queued(services, HEAD_KIND)
    assert {row["due_at"] for row in heads} == {clock.now()}
    assert T.text("en", "audit.head_why_daily") in heads[0]["params"]["text"]
    assert await services.audit.anchor_daily() == 0, "the admins hold this head already"
    # The head changes; the next daily send waits for the day to pass.
    await services.team.set_name(ADMIN, "Asel")
    clock.advance(3600)
    assert await services.audit.anchor_daily() == 0
    clock.advance(ANCHOR_EVERY.total_seconds() - 3600)
    assert await services.audit.anchor_daily() == 2
    assert {head_of(row) for row in await queued(services, HEAD_KIND)} == {
        (await services.audit.verify()).head
    }
    # Unchanged for days: nothing new to keep.
    clock.advance(3 * ANCHOR_EVERY.total_seconds())
    assert await services.audit.anchor_daily() == 0


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """A fake Telegram on 127.0.0.1."""
    async with FakeBotApi(TEST_TOKEN) as server:
        yield server


async def test_the_scheduled_job_sends_the_head_through_the_real_bot(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    bot = RunningBot(make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN})))
    await bot.start()
    try:
        await fake.wait_for("getUpdates", timeout=30)
        assert bot.app is not None and bot.app.job_queue is not None
        (job,) = bot.app.job_queue.get_jobs_by_name("audit_head")
        services = bot.app_services()
        await job.run(bot.app)
        assert not await every_head(services), "the chain began just now"
        # As if the last head went out two days ago.
        record = {
            "entry": 0,
            "hash": "0" * 64,
            "at": "2026-01-01T00:00:00+00:00",
            "due": "2026-01-01T00:00:00+00:00",
        }
        await sql(
            services.db,
            "INSERT INTO bot_state (key, value) VALUES ('audit_head_sent', :record)",
            record=json.dumps(record),
        )
        await job.run(bot.app)
        (sent,) = await fake.wait_for("sendMessage", chat_id=ADMIN, timeout=15)
        assert head_of({"params": sent.params}) == (await services.audit.verify()).head
        await job.run(bot.app)
        assert len(await every_head(services)) == 1, "once per head"
    finally:
        await bot.stop()


# ------------------------------------------------------------------------------------ verify --expect-head


async def test_a_chain_cut_back_to_an_older_seal_fails_the_head_the_admins_hold(
    services: Services, settings: Settings
) -> None:
    await join(services, AIDA)
    older = await services.audit.verify()
    older_seal = await seal(services.db)
    await services.team.set_name(AIDA, "Aida")
    await services.team.revoke(ADMIN, "Aida")
    held = head_of((await queued(services, HEAD_KIND))[0])  # what the admins were sent
    # Someone with the disk cuts the entries after `older` and puts back the seal of that time.
    await sql(
        services.db,
        "DELETE FROM audit_log WHERE id > :id",
        "UPDATE bot_state SET value = :seal WHERE key = 'audit_head'",
        id=older.entries,
        seal=older_seal,
    )
    assert (await services.audit.verify()).intact, "the server alone cannot tell"
    cut = await services.audit.verify(expect_head=held)
    assert not cut.intact
    (problem,) = cut.problems
    assert "is not in the log" in problem and f"ends at entry {older.entries}," in problem
    # An older head is still there: that much is proven.
    assert (await services.audit.verify(expect_head=older.head[:16])).intact
    code, output = await jarchy(settings, "audit", "verify", "--expect-head", held)
    assert code == 1 and "is not in the log" in output and "BROKEN" in output, output


async def test_an_older_seal_restored_over_newer_rows_is_written_into_the_chain(services: Services) -> None:
    await join(services, AIDA)
    older_seal = await seal(services.db)
    await services.team.set_name(AIDA, "Aida")
    await sql(services.db, "UPDATE bot_state SET value = :seal WHERE key = 'audit_head'", seal=older_seal)
    # The bot goes on working (before, every entry collided on its id) and the break stays in the chain.
    await services.team.set_name(AIDA, "Aida K")
    assert (await actions(services.db))[-2:] == [("audit.seal_broken", "cut"), ("team.name", None)]
    problems = (await services.audit.verify()).problems
    assert any("an older seal was restored" in p for p in problems), problems
    notices = await queued(services, NOTICE_KIND)
    assert sorted(n["params"]["chat_id"] for n in notices) == [ADMIN, OTHER_ADMIN]
    assert notices[0]["params"]["text"] == T.text("en", "audit.cut_notice")


async def test_rows_cut_off_the_end_are_told_to_the_admins_at_the_next_entry(services: Services) -> None:
    await join(services, AIDA)
    await services.team.set_name(AIDA, "Aida")
    await sql(services.db, "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    await services.team.set_name(AIDA, "Aida K")
    problems = (await services.audit.verify()).problems
    assert any("missing" in p for p in problems) and any("cut off the end" in p for p in problems)
    assert [n["params"]["text"] for n in await queued(services, NOTICE_KIND)] == [
        T.text("en", "audit.cut_notice")
    ] * 2


async def test_a_removed_seal_is_told_to_the_admins(services: Services) -> None:
    await join(services, AIDA)
    await sql(services.db, "DELETE FROM bot_state WHERE key = 'audit_head'")
    await services.team.set_name(AIDA, "Aida")
    assert any("seal was removed" in p for p in (await services.audit.verify()).problems)
    assert {n["params"]["text"] for n in await queued(services, NOTICE_KIND)} == {
        T.text("en", "audit.seal_notice")
    }


async def test_the_expected_head_passes_on_an_intact_chain_and_a_wrong_one_fails(
    services: Services, settings: Settings
) -> None:
    await join(services, AIDA)
    kept = (await services.audit.verify()).head
    await services.team.set_name(AIDA, "Aida")
    verdict = await services.audit.verify(expect_head=kept[:16].upper())
    assert verdict.intact and verdict.anchor is not None and verdict.anchor.hash == kept
    assert verdict.last is not None and verdict.last.id == verdict.anchor.id + 1
    wrong = "f" * 16 if not kept.startswith("f" * 16) else "e" * 16
    assert any("is not in the log" in p for p in (await services.audit.verify(expect_head=wrong)).problems)
    for typo in (kept[:15], kept[:15] + "g", kept + "0"):
        with pytest.raises(ValueError, match="hex characters"):
            await services.audit.verify(expect_head=typo)
    code, output = await jarchy(settings, "audit", "verify", "--expect-head", kept[:20])
    assert code == 0 and f"head is entry {verdict.anchor.id} " in output and "intact" in output, output
    code, output = await jarchy(settings, "audit", "verify", "--expect-head", kept[:8])
    assert code == 2 and "hex characters" in output, output


# ---------------------------------------------------------------------------------- never a quiet restart


async def test_a_wiped_log_and_seal_are_marked_told_and_fail_verify(
    settings: Settings, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    services = await start(settings, clock)
    try:
        await join(services, AIDA)
        await seed_reports(services.db, services.cipher, [Seed()], clock.now())
        held = (await services.audit.verify()).head
        await sql(services.db, "DELETE FROM audit_log", "DELETE FROM bot_state WHERE key = 'audit_head'")
        problems = (await services.audit.verify()).problems
        assert any("it was wiped" in p for p in problems), "found before any bot starts on it"
    finally:
        await services.close()
    with caplog.at_level(logging.ERROR, logger="bot.runtime.audit"):
        services = await start(settings, clock)
    try:
        assert (await actions(services.db))[:2] == [("audit.seal_broken", "wiped"), ("audit.start", None)]
        assert any("tampered with (wiped)" in r.getMessage() for r in caplog.records)
        notices = await queued(services, NOTICE_KIND)
        assert sorted(n["params"]["chat_id"] for n in notices) == [ADMIN, OTHER_ADMIN]
        assert notices[0]["params"]["text"] == T.text("en", "audit.wiped_notice")
        verdict = await services.audit.verify(expect_head=held)
        assert any("were wiped from a database in use" in p for p in verdict.problems)
        assert any("is not in the log" in p for p in verdict.problems)
    finally:
        await services.close()


async def test_a_database_with_reports_but_no_chain_is_flagged_not_begun_quietly(
    settings: Settings, clock: FakeClock
) -> None:
    services = await start(settings, clock)  # a new database: the chain begins quietly
    try:
        assert await actions(services.db) == [("audit.start", None)]
        assert not await queued(services, NOTICE_KIND)
        # Reports and nothing else (no team yet), but no chain: it was emptied, or never kept.
        await seed_reports(services.db, services.cipher, [Seed(), Seed()], clock.now())
        await sql(services.db, "DELETE FROM audit_log", "DELETE FROM bot_state WHERE key = 'audit_head'")
    finally:
        await services.close()
    services = await start(settings, clock)
    try:
        assert (await actions(services.db))[0] == ("audit.seal_broken", "wiped")
        assert len(await queued(services, NOTICE_KIND)) == 2
        assert not (await services.audit.verify()).intact
    finally:
        await services.close()


async def test_a_database_wiped_clean_begins_anew_but_fails_the_kept_head(
    settings: Settings, clock: FakeClock
) -> None:
    services = await start(settings, clock)
    try:
        await join(services, AIDA)
        await seed_reports(services.db, services.cipher, [Seed()], clock.now())
        held = (await services.audit.verify()).head
        # Everything that says the database was used goes too: it looks new, so the chain begins again...
        await sql(
            services.db,
            "DELETE FROM audit_log",
            "DELETE FROM bot_state WHERE key = 'audit_head'",
            "DELETE FROM reports",
            "DELETE FROM invites",
            "DELETE FROM team",
            "DELETE FROM user_roles WHERE role = 'coordinator'",
        )
    finally:
        await services.close()
    services = await start(settings, clock)
    try:
        assert await actions(services.db) == [("audit.start", None)]
        assert (await services.audit.verify()).intact
        # ...and only the head the admins kept shows it.
        assert not (await services.audit.verify(expect_head=held)).intact
    finally:
        await services.close()
