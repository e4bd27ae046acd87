"""The copy of a user's row that spares a read per update: never older than a change this process made,
never another person's, gone with /forget, and not kept from a read that raced a write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bot.domain.errors import NotAllowed
from bot.runtime.clock import FakeClock
from bot.wiring import Services, build_limiter, open_services
from storage.database import Database
from storage.users import CACHE_SIZE, CACHE_TTL, User, UserRepository, cache_of
from tests.bot.services.access.test_members import join
from tests.conftest import make_settings

ADMIN, AIDA, BOLOT = 5001, 6001, 6002
NOW = datetime.fromisoformat("2026-11-20T06:00:00+00:00")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
async def services(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Services]:
    """The real services on a fake clock, with one admin from settings."""
    settings = make_settings(tmp_path, admin_ids=frozenset({ADMIN}))
    opened = await open_services(settings, clock, build_limiter(settings, clock))
    yield opened
    await opened.close()


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Collect every SQL statement run on the database meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def test_someone_the_bot_knows_is_recognised_without_a_query(services: Services) -> None:
    await services.users.seen(AIDA, "ru")
    await services.users.seen(AIDA, "ru")  # the first read after the write that created her
    with statements(services.db) as ran:
        profile = await services.users.seen(AIDA, "ru")
    assert ran == []
    assert profile.language == "ru"


async def test_a_revoked_coordinator_loses_the_role_and_the_access_at_once(services: Services) -> None:
    await join(services, AIDA)
    assert "coordinator" in (await services.users.seen(AIDA, "en")).roles
    assert "coordinator" in (await services.users.seen(AIDA, "en")).roles  # from the copy now
    aida = services.pseudonyms.of_user(AIDA)
    await services.team.revoke(ADMIN, aida[:10])
    # No time passes: the copy taken a moment ago must not outlive the revocation.
    assert (await services.users.seen(AIDA, "en")).roles == frozenset()
    with pytest.raises(NotAllowed):
        await services.gate.require(AIDA, "team.list", roles=("coordinator", "admin"))


async def test_a_role_granted_shows_at_once(services: Services) -> None:
    assert (await services.users.seen(AIDA, "en")).roles == frozenset()
    assert (await services.users.seen(AIDA, "en")).roles == frozenset()
    await join(services, AIDA)
    assert "coordinator" in (await services.users.seen(AIDA, "en")).roles


async def test_a_read_racing_a_revocation_does_not_bring_the_old_role_back(services: Services) -> None:
    await join(services, AIDA)
    aida = services.pseudonyms.of_user(AIDA)
    async with services.db.write() as conn:
        await UserRepository().revoke(conn, aida, "coordinator")
        # Not committed yet: a reader sees the role still there, and must not keep that copy.
        assert "coordinator" in (await services.users.seen(AIDA, "en")).roles
    assert (await services.users.seen(AIDA, "en")).roles == frozenset()
    assert (await services.users.seen(AIDA, "en")).roles == frozenset()


async def test_a_read_begun_before_a_commit_is_not_kept(services: Services) -> None:
    cache = cache_of(services.db.engine.sync_engine)
    await services.users.seen(AIDA, "en")
    aida = services.pseudonyms.of_user(AIDA)
    before = cache.epoch
    old = User(aida, None, "en", True, frozenset({"coordinator"}))
    async with services.db.write() as conn:
        await UserRepository().set_language(conn, aida, "ky", NOW)
    cache.keep(old, NOW, before)
    assert cache.recent(aida, NOW) is None
    assert (await services.users.seen(AIDA, "en")).language == "ky"


async def test_a_rolled_back_write_leaves_the_rows_as_they_were(services: Services) -> None:
    await services.users.seen(AIDA, "en")
    aida = services.pseudonyms.of_user(AIDA)
    with pytest.raises(RuntimeError):
        async with services.db.write() as conn:
            await UserRepository().set_language(conn, aida, "ky", NOW)
            raise RuntimeError("no")
    assert (await services.users.seen(AIDA, "en")).language == "en"
    with statements(services.db) as ran:
        assert (await services.users.seen(AIDA, "en")).language == "en"
    assert ran == []  # copies are kept again once the write is over


async def test_forget_leaves_no_copy(services: Services) -> None:
    await services.users.choose_language(AIDA, "uz")
    assert (await services.users.seen(AIDA, "en")).language == "uz"
    await services.reports.forget(AIDA)
    cache = cache_of(services.db.engine.sync_engine)
    assert cache.recent(services.pseudonyms.of_user(AIDA), NOW) is None
    # Written to again, the person is new: nothing of the language chosen before came back.
    assert (await services.users.seen(AIDA, "en")).language == "en"


async def test_copies_never_pass_between_people(services: Services) -> None:
    await services.users.choose_language(AIDA, "ru")
    await join(services, BOLOT)
    for _ in range(3):
        aida, bolot = await services.users.seen(AIDA, "en"), await services.users.seen(BOLOT, "en")
        assert (aida.pseudonym, aida.language, aida.roles) == (
            services.pseudonyms.of_user(AIDA),
            "ru",
            frozenset(),
        )
        assert (bolot.pseudonym, bolot.language, bolot.roles) == (
            services.pseudonyms.of_user(BOLOT),
            "en",
            frozenset({"coordinator"}),
        )


async def test_another_process_s_change_is_seen_within_the_ttl(
    services: Services, clock: FakeClock, tmp_path: Path
) -> None:
    await join(services, AIDA)
    await services.users.seen(AIDA, "en")
    assert "coordinator" in (await services.users.seen(AIDA, "en")).roles
    other = Database.connect(services.db.engine.url)  # the command line, or a second instance
    try:
        async with other.write() as conn:
            await UserRepository().revoke(conn, services.pseudonyms.of_user(AIDA), "coordinator")
    finally:
        await other.close()
    clock.advance(CACHE_TTL.total_seconds() + 1)
    assert (await services.users.seen(AIDA, "en")).roles == frozenset()


def test_the_copies_are_bounded() -> None:
    cache = cache_of_new()
    for index in range(CACHE_SIZE + 10):
        cache.keep(User(f"p{index}", None, None, True, frozenset()), NOW, cache.epoch)
    assert cache.recent("p0", NOW) is None
    assert cache.recent(f"p{CACHE_SIZE + 9}", NOW) is not None


def test_copies_too_old_to_be_used_are_dropped_as_new_ones_come() -> None:
    cache = cache_of_new()
    for index in range(100):
        cache.keep(User(f"old{index}", None, None, True, frozenset()), NOW, cache.epoch)
    later = NOW + CACHE_TTL + timedelta(seconds=1)
    cache.keep(User("new", None, None, True, frozenset()), later, cache.epoch)
    assert len(cache) == 1 and cache.recent("new", later) is not None


def cache_of_new() -> Any:
    from storage.users import UserCache

    return UserCache()


async def test_someone_new_writing_leaves_the_others_copies(services: Services) -> None:
    await services.users.seen(AIDA, "ru")
    await services.users.seen(AIDA, "ru")
    await services.users.seen(BOLOT, "en")  # new: his row is written
    with statements(services.db) as ran:
        assert (await services.users.seen(AIDA, "ru")).language == "ru"
    assert ran == []
