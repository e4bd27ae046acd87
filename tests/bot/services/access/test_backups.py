"""Backup bots in the services: sealed reach records, invitations once per place, the census, the choice of
bot per row, and the switch (who may make it, what it queues, that it happens once)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.domain.errors import NotAllowed
from bot.runtime.clock import SystemClock
from bot.runtime.fleet import running_settings
from bot.runtime.outbox import OutgoingMessage
from bot.runtime.telegram_api import ApiResult
from bot.services.access.backups import MOVED_KIND, UnknownBot
from bot.settings import SecretStr, Settings
from bot.wiring import Services, build_limiter, open_services
from storage.outbox import ClaimedRow
from tests.conftest import make_settings

BACKUP = "654321:BACKUP-TOKEN-abcdef"
BACKUP_ID = 654321
MAIN_ID = 123456
ADMIN, PERSON, OTHER = 5301, 5302, 5303


def fleet_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, admin_ids=frozenset({ADMIN}), backup_bot_tokens=(SecretStr(BACKUP),))


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = fleet_settings(tmp_path)
    clock = SystemClock()
    opened = await open_services(settings, clock, build_limiter(settings, clock))
    opened.fleet.usernames.update({MAIN_ID: "jarchy_test_bot", BACKUP_ID: "jarchy_backup_bot"})
    try:
        yield opened
    finally:
        await opened.close()


async def column(services: Services, sql: str) -> list[object]:
    async with services.db.read() as conn:
        return list((await conn.execute(text(sql))).scalars())


def row(
    services: Services, id_: int, chat_id: int, kind: str = "reminder", ref: str | None = None
) -> ClaimedRow:
    return ClaimedRow(
        id=id_,
        uid=f"u{id_}",
        kind=kind,
        method="sendMessage",
        payload=b"",
        chat_key=services.pseudonyms.of_chat(chat_id),
        chat_kind="private" if chat_id > 0 else "group",
        recipient=services.pseudonyms.of_user(chat_id) if chat_id > 0 else None,
        priority=30,
        attempts=1,
        unknown_outcomes=0,
        ref=ref,
    )


async def test_a_start_in_the_backup_is_kept_sealed_and_dated_by_the_day(services: Services) -> None:
    assert await services.backups.started(BACKUP_ID, PERSON, "ru") is True
    assert await services.backups.started(BACKUP_ID, PERSON, "ru") is False  # once
    sealed = await column(services, "SELECT sealed FROM reach")
    assert len(sealed) == 1 and isinstance(sealed[0], bytes)
    assert str(PERSON).encode() not in sealed[0] and str(BACKUP_ID).encode() not in sealed[0]
    async with services.db.read() as conn:
        record = await services.backups.record_of(conn, PERSON)
    assert record.bots == {BACKUP_ID} and record.chat == PERSON
    (updated,) = await column(services, "SELECT updated_at FROM reach")
    # The day only (microseconds since the epoch): the record's time cannot be set beside a report
    # received the same minute.
    assert isinstance(updated, int) and updated % 86_400_000_000 == 0
    # A record moved to another person's row does not open there.
    await services.backups.started(BACKUP_ID, OTHER, "en")
    async with services.db.write() as conn:
        await conn.execute(
            text(
                "UPDATE reach SET sealed = (SELECT sealed FROM reach WHERE pseudonym = :a) "
                "WHERE pseudonym = :b"
            ),
            {"a": services.pseudonyms.of_user(PERSON), "b": services.pseudonyms.of_user(OTHER)},
        )
    async with services.db.read() as conn:
        assert (await services.backups.record_of(conn, OTHER)).bots == frozenset()
    # /forget takes the record with the rest.
    await services.reports.forget(PERSON)
    assert await column(services, "SELECT count(*) FROM reach") == [1]


async def test_the_invitation_shows_once_per_place_and_never_to_who_started_the_backup(
    services: Services,
) -> None:
    backups = services.backups
    line = await backups.invitation(PERSON, "start", "en")
    assert "@jarchy_backup_bot" in line
    assert await backups.invitation(PERSON, "start", "en") == ""
    assert "@jarchy_backup_bot" in await backups.invitation(PERSON, "settings", "ky")
    assert await backups.invitation(PERSON, "nowhere", "en") == ""
    # The invitation alone keeps no Telegram id.
    async with services.db.read() as conn:
        assert (await backups.record_of(conn, PERSON)).chat is None
    await backups.started(BACKUP_ID, OTHER, "en")
    assert await backups.invitation(OTHER, "report", "en") == ""
    # No backup that answers: nothing to invite to.
    services.fleet.refused[BACKUP_ID] = services.clock.now()
    assert await backups.invitation(PERSON, "report", "en") == ""


async def test_the_census_counts_who_no_working_bot_reaches(services: Services) -> None:
    for person in (ADMIN, PERSON, OTHER):
        await services.users.seen(person, "en")
    await services.backups.started(BACKUP_ID, PERSON, "en")
    census = await services.backups.census()
    reaches = {line.bot.bot_id: line.reaches for line in census.bots}
    assert census.people == 3 and census.unreachable == 0
    assert reaches == {MAIN_ID: 3, BACKUP_ID: 1}
    services.fleet.refused[MAIN_ID] = services.clock.now()
    assert (await services.backups.census()).unreachable == 2


async def test_rows_go_through_a_bot_that_can_reach_their_person(tmp_path: Path) -> None:
    settings = running_settings(fleet_settings(tmp_path), BACKUP_ID)
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        assert services.fleet.active.bot_id == BACKUP_ID and services.fleet.main.bot_id == MAIN_ID
        await services.backups.started(BACKUP_ID, PERSON, "en")
        rows = [row(services, 1, PERSON), row(services, 2, OTHER), row(services, 3, -100777)]
        plan = await services.backups.route(rows)
        # The backup in use reaches PERSON (not named: the usual way); OTHER only through the main bot,
        # which still answers; the group goes the usual way.
        assert set(plan) == {2} and plan[2] is services.fleet.api(MAIN_ID)
        services.fleet.refused[MAIN_ID] = clock.now()
        plan = await services.backups.route(rows)
        assert plan == {2: None}  # waits: no working bot can write to OTHER
        moved = row(services, 4, -100999, kind=MOVED_KIND, ref=f"{MOVED_KIND}:{MAIN_ID}")
        assert (await services.backups.route([moved]))[4] is services.fleet.api(MAIN_ID)
        # An edit or a deletion of a message the main bot sent waits for the main bot: through the
        # backup it would act on another message, or on none, and pass as done.
        cleanup = dataclasses.replace(row(services, 5, PERSON, kind="cleanup"), via_bot=MAIN_ID)
        assert (await services.backups.route([cleanup])) == {5: None}
        services.fleet.refused.pop(MAIN_ID)
        assert (await services.backups.route([cleanup]))[5] is services.fleet.api(MAIN_ID)
        own = dataclasses.replace(cleanup, via_bot=BACKUP_ID)
        assert await services.backups.route([own]) == {}
    finally:
        await services.close()


async def test_only_an_admin_switches_and_a_switch_happens_once(services: Services) -> None:
    await services.users.seen(ADMIN, "en")
    await services.users.seen(PERSON, "en")
    await services.backups.started(BACKUP_ID, PERSON, "ru")
    with pytest.raises(NotAllowed):
        await services.backups.switch_by(PERSON, BACKUP_ID)
    with pytest.raises(UnknownBot):
        await services.backups.switch_by(ADMIN, 999)
    # A row that waited for the refused main bot is tried at once after the switch.
    waiting = OutgoingMessage(
        "sendMessage", {"chat_id": PERSON, "text": "x"}, kind="reminder", recipient_user_id=PERSON
    )
    async with services.db.write() as conn:
        await conn.execute(text("INSERT INTO channels (chat_id, added_at) VALUES (-100555, 0)"))
        await services.outbox.enqueue(conn, [waiting])
        await conn.execute(
            text("UPDATE outbox SET last_error = '401: Unauthorized', due_at = due_at + 3600000000")
        )
    result = await services.backups.switch_by(ADMIN, BACKUP_ID)
    assert result.changed and result.told_people == 1 and result.told_channels == 1
    again = await services.backups.switch_by(ADMIN, BACKUP_ID)
    assert not again.changed
    assert await column(services, "SELECT value FROM bot_state WHERE key = 'active_bot'") == [str(BACKUP_ID)]
    assert await column(
        services, "SELECT action FROM audit_log WHERE action = 'bot.switch' AND outcome = 'ok'"
    ) == ["bot.switch"]
    moved = await column(services, "SELECT ref FROM outbox WHERE kind = 'bot_moved'")
    assert moved == [f"{MOVED_KIND}:{BACKUP_ID}"] * 2
    late = (
        "SELECT count(*) FROM outbox WHERE kind = 'reminder' "
        "AND due_at > (SELECT max(created_at) FROM outbox)"
    )
    assert await column(services, late) == [0]


async def test_inviting_everyone_reaches_each_subscriber_once(services: Services) -> None:
    await services.users.seen(ADMIN, "en")
    for person in (PERSON, OTHER):
        await services.users.seen(person, "en")
        await services.campaigns.subscribe(person, person)
    await services.backups.started(BACKUP_ID, OTHER, "en")  # already there: not invited
    with pytest.raises(NotAllowed):
        await services.backups.invite_by(PERSON)
    assert await services.backups.invite_by(ADMIN) == 1
    assert await services.backups.invite_by(ADMIN) == 0
    kinds = await column(services, "SELECT kind FROM outbox WHERE kind = 'backup_invite'")
    assert kinds == ["backup_invite"]


async def test_without_a_backup_nothing_of_this_is_wired(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_ids=frozenset({ADMIN}))
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        edit = OutgoingMessage(
            "editMessageText", {"chat_id": PERSON, "message_id": 3, "text": "x"}, kind="alert_edit"
        )
        async with services.db.write() as conn:
            await services.outbox.enqueue(conn, [edit])
        assert await column(services, "SELECT via_bot FROM outbox") == [None]
        # A person who never started the bot stays what it always was: blocked, not waiting.
        refused = ApiResult(
            ok=False, error_code=403, description="Forbidden: bot can't initiate conversation with a user"
        )
        assert services.delivery._judge(row(services, 1, PERSON), refused).status == "blocked"
    finally:
        await services.close()
