"""The gate is the one place a role is checked, and every refusal it makes is in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.domain.errors import NotAllowed, Refused
from bot.runtime.clock import FakeClock
from bot.wiring import Services, build_limiter, open_services
from tests.conftest import make_settings

ADMIN, AIDA = 5001, 6001
NOW = datetime.fromisoformat("2026-11-20T06:00:00+00:00")


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    """The real services on a fake clock, with one admin from settings."""
    settings = make_settings(tmp_path, admin_ids=frozenset({ADMIN}))
    clock = FakeClock(NOW)
    opened = await open_services(settings, clock, build_limiter(settings, clock))
    yield opened
    await opened.close()


async def refusals(services: Services) -> list[tuple[str, str, str | None, str | None]]:
    async with services.db.read() as conn:
        rows = await conn.execute(
            text("SELECT actor, action, target, detail FROM audit_log WHERE outcome = 'refused' ORDER BY id")
        )
        return [(r.actor, r.action, r.target, r.detail) for r in rows]


async def test_a_check_before_telegram_is_asked_audits_its_refusal(services: Services) -> None:
    # /bind_channel and a /team revoke button check the role before asking Telegram about a chat; that
    # check is the gate's, so a refusal there is audited like one inside an action.
    await services.users.seen(AIDA, "en")
    with pytest.raises(NotAllowed):
        await services.gate.require(AIDA, "channel.bind", "-100", ("admin",))
    aida = services.pseudonyms.of_user(AIDA)
    assert await refusals(services) == [(aida, "channel.bind", "-100", "role")]


async def test_a_check_that_passes_audits_nothing(services: Services) -> None:
    assert await services.gate.require(ADMIN, "team.revoke", roles=("admin",)) == services.pseudonyms.of_user(
        ADMIN
    )
    assert await refusals(services) == []


async def test_a_refused_action_runs_none_of_its_after_commit_work(services: Services) -> None:
    # What an action queued for after its commit (a wake, a file deletion) dies with its rollback; the
    # refusal is audited all the same.
    ran: list[str] = []
    with pytest.raises(Refused):
        async with services.gate.acting(ADMIN, "case.edit", "#1", once=False) as act:
            act.uow.after_commit(lambda: ran.append("after"))
            raise Refused("cases.not_found")
    assert ran == []
    admin = services.pseudonyms.of_user(ADMIN)
    assert await refusals(services) == [(admin, "case.edit", "#1", "cases.not_found")]
    async with services.gate.acting(ADMIN, "case.edit", "#1", once=False) as act:
        act.uow.after_commit(lambda: ran.append("after"))
    assert ran == ["after"]
