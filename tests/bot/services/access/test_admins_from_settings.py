"""Admins come from JARCHY_ADMIN_IDS: one dropped from the list loses the role and everything a revocation
does, in one transaction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.clock import SystemClock
from bot.wiring import Services, build_limiter, open_services
from tests.conftest import make_settings


async def admins(services: Services) -> list[str]:
    async with services.db.read() as conn:
        rows = await conn.execute(text("SELECT pseudonym FROM user_roles WHERE role = 'admin'"))
        return list(rows.scalars().all())


async def test_a_failure_while_retiring_a_dropped_admin_keeps_the_role(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_ids=frozenset({501, 502}))
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:

        async def crash(conn: AsyncConnection, pseudonym: str) -> None:
            raise RuntimeError("the process dies while retiring them")

        with pytest.raises(RuntimeError):
            await services.users.bootstrap_admins({501}, on_removed=crash)
        # Nothing half-done: 502 is still an admin, so the next start retires them completely.
        assert services.pseudonyms.of_user(502) in await admins(services)
    finally:
        await services.close()
    services = await open_services(
        replace(settings, admin_ids=frozenset({501})), clock, build_limiter(settings, clock)
    )
    try:
        assert services.pseudonyms.of_user(502) not in await admins(services)
        async with services.db.read() as conn:
            removed = await conn.execute(
                text("SELECT target FROM audit_log WHERE action = 'team.admin_removed'")
            )
            assert removed.scalars().all() == [services.pseudonyms.of_user(502)]
    finally:
        await services.close()
