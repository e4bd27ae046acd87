"""Only coordinators are in the coordinators' group: a revoked coordinator is removed from it, a stranger who
joins is reported (and removed when the settings say so), the periodic check tells the admins once when
more people are in it than hold a role, and a bot that may not ban says so instead of retrying."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.wiring import Services
from messages import Safe, catalogs
from tests.fakebot import ApiCall, FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, Person
from tests.support.replies import reply_texts
from tests.support.settings import make_settings

GROUP = -1_001_234_500_777  # a supergroup: removed users stay banned until unbanned
CORA, REX, EVE = 7101, 7102, 7103
STRANGERS = (8101, 8102, 8103)
T = catalogs()


async def running(fake: FakeBotApi, tmp_path: Path, *, remove_strangers: bool = False) -> RunningBot:
    """Start the bot with an admin and the coordinators' group, the admin its owner."""
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=GROUP,
        remove_strangers=remove_strangers,
    )
    bot = RunningBot(settings)
    await bot.start()
    await Person(fake, ADMIN).say("/help")
    fake.add_chat_member(GROUP, ADMIN, "creator", update=False)
    return bot


@pytest.fixture
async def bot(fake: FakeBotApi, tmp_path: Path) -> AsyncIterator[RunningBot]:
    """The running bot, strangers reported only."""
    running_bot = await running(fake, tmp_path)
    yield running_bot
    await running_bot.stop()


async def coordinator(services: Services, user_id: int, name: str) -> None:
    """Make a coordinator the way people become one: an admin's invite, used once."""
    await services.users.seen(user_id, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(user_id, invite.token)
    await services.team.set_name(user_id, name)


async def stored_id(services: Services, user_id: int) -> bytes | None:
    """Return what the database keeps of a person's Telegram id."""
    async with services.db.read() as conn:
        value = (
            await conn.execute(
                text("SELECT telegram_id FROM coordinator_ids WHERE pseudonym = :p"),
                {"p": services.pseudonyms.of_user(user_id)},
            )
        ).scalar()
    return None if value is None else bytes(value)


async def notice(fake: FakeBotApi, wanted: Callable[[str], bool], timeout: float = 15.0) -> str:
    """Wait for the admin's private notice whose text passes `wanted`; return its text."""
    calls = await fake.wait_for(
        "sendMessage", chat_id=ADMIN, timeout=timeout, predicate=lambda c: wanted(str(c.params.get("text")))
    )
    return str(calls[0].params["text"])


def calls_of(fake: FakeBotApi, method: str, user_id: int) -> list[ApiCall]:
    """Every call of `method` about one user, answered or refused."""
    return [c for c in fake.calls if c.method == method and c.params.get("user_id") == user_id]


async def test_a_revoked_coordinator_is_removed_from_the_group_and_forgotten(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    await coordinator(services, CORA, "Cora")
    fake.add_chat_member(GROUP, CORA, first_name="Cora", username="cora_t")  # a coordinator: no notice
    # Handled while Cora still holds the role (the group and the admin's chat run apart).
    await bot.quiet(fake)
    assert await stored_id(services, CORA) is not None
    assert str(CORA).encode() not in (await stored_id(services, CORA) or b""), "sealed, not in the clear"

    await Person(fake, ADMIN).say("/revoke Cora")
    (ban,) = await fake.wait_for("banChatMember", timeout=10)
    (unban,) = await fake.wait_for("unbanChatMember", timeout=15)
    assert ban.params == {"chat_id": GROUP, "user_id": CORA, "revoke_messages": True}
    assert unban.params == {"chat_id": GROUP, "user_id": CORA, "only_if_banned": True}
    assert fake.calls.index(ban) < fake.calls.index(unban), "the unban never overtakes the ban"
    assert ban.ok and unban.ok
    assert fake.chat_members(GROUP)[CORA] == "left", "out of the group, and free to be invited again"
    assert await stored_id(services, CORA) is None
    async with services.db.read() as conn:
        audited = (
            await conn.execute(text("SELECT target, outcome FROM audit_log WHERE action = 'members.removed'"))
        ).all()
    assert [tuple(row) for row in audited] == [(services.pseudonyms.of_user(CORA), "ok")]

    # Coming back through an old invite link: removed again at once, though strangers are only reported.
    fake.add_chat_member(GROUP, CORA, first_name="Cora", username="cora_t")
    text_ = await notice(fake, lambda t: "@cora_t" in t)
    assert text_ == T.text("en", "members.stranger_removed", who="Cora @cora_t")
    await fake.wait_for("banChatMember", count=2, timeout=15)
    await fake.wait_for("unbanChatMember", count=2, timeout=15)
    assert fake.chat_members(GROUP)[CORA] == "left"
    assert not any("could not remove" in t for t in reply_texts(fake, ADMIN))


@pytest.mark.parametrize("remove", [False, True])
async def test_someone_without_a_role_joining_is_reported_and_removed_when_set(
    fake: FakeBotApi, tmp_path: Path, remove: bool
) -> None:
    bot = await running(fake, tmp_path, remove_strangers=remove)
    try:
        services = bot.app_services()
        await coordinator(services, CORA, "Cora")
        fake.add_chat_member(GROUP, CORA)
        fake.add_chat_member(GROUP, EVE, first_name="Eve <K>", username="eve_k", by_user_id=CORA)
        told = await notice(fake, lambda t: "@eve_k" in t)
        key = "members.stranger_removed" if remove else "members.stranger_joined"
        assert told == T.text("en", key, who="Eve <K> @eve_k")
        assert "Eve &lt;K&gt;" in told, "Telegram's names are escaped"
        if remove:
            await fake.wait_for("unbanChatMember", timeout=15)
            assert [c.ok for c in calls_of(fake, "banChatMember", EVE)] == [True]
            assert fake.chat_members(GROUP)[EVE] == "left"
        else:
            await bot.quiet(fake)
            assert not calls_of(fake, "banChatMember", EVE)
            assert fake.chat_members(GROUP)[EVE] == "member"
        # A coordinator joining was no news; the stranger is audited by pseudonym, never by their id.
        assert sum("@" in t and "joined" in t for t in reply_texts(fake, ADMIN)) == 1
        async with services.db.read() as conn:
            audited = (
                await conn.execute(
                    text("SELECT target, detail FROM audit_log WHERE action LIKE 'members.%' ORDER BY id")
                )
            ).all()
            ids = (await conn.execute(text("SELECT pseudonym FROM coordinator_ids"))).scalars().all()
        eve = services.pseudonyms.of_user(EVE)
        assert (eve, "removed" if remove else "reported") in [tuple(row) for row in audited]
        assert all(str(EVE) not in f"{target} {detail}" for target, detail in audited)
        assert eve not in ids, "a stranger's id is not kept"
    finally:
        await bot.stop()


async def test_the_member_check_reports_more_members_than_role_holders_once(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    await coordinator(services, CORA, "Cora")
    for user_id in (CORA, *STRANGERS[:2]):
        fake.add_chat_member(GROUP, user_id, update=False)  # in the group before the bot could see

    first = await services.members.check()
    assert first is not None and (first.members, first.holders, first.excess) == (5, 2, 2)
    expected = T.text("en", "members.check_excess", count=5, holders=2, excess=2)
    assert await notice(fake, lambda t: t == expected) == expected
    again = await services.members.check()
    assert again is not None and again.excess == 2
    await bot.quiet(fake)
    assert reply_texts(fake, ADMIN).count(expected) == 1, "the same figure is not told twice"

    fake.add_chat_member(GROUP, STRANGERS[2], update=False)
    await services.members.check()
    more = T.text("en", "members.check_excess", count=6, holders=2, excess=3)
    await notice(fake, lambda t: t == more)
    for user_id in STRANGERS:
        fake.add_chat_member(GROUP, user_id, "left", update=False)
    await services.members.check()
    await notice(fake, lambda t: t == T.text("en", "members.check_clear"))
    assert reply_texts(fake, ADMIN).count(expected) == 1


async def test_a_bot_that_may_not_ban_tells_the_admins_and_does_not_retry(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    fake.set_admin_rights(GROUP, can_restrict_members=False)
    await coordinator(services, REX, "Rex")
    fake.add_chat_member(GROUP, REX, update=False)

    await services.team.revoke(ADMIN, "Rex")
    reason = T.text("en", "members.reason_rights")
    expected = T.text("en", "members.remove_failed", name="Rex", reason=Safe(reason))
    assert await notice(fake, lambda t: t == expected) == expected
    await asyncio.sleep(6)  # time for a retry (the first backoff is 2 s) and another pass of the removals
    (refused,) = calls_of(fake, "banChatMember", REX)
    assert (
        refused.response["description"] == "Bad Request: not enough rights to restrict/unrestrict chat member"
    )
    assert not calls_of(fake, "unbanChatMember", REX)
    async with services.db.read() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT kind, status FROM outbox WHERE kind IN ('member_ban', 'member_unban') ORDER BY id"
                )
            )
        ).all()
        under_way = (await conn.execute(text("SELECT count(*) FROM member_removals"))).scalar()
    assert [tuple(row) for row in rows] == [("member_ban", "dead"), ("member_unban", "cancelled")]
    assert under_way == 0
    assert fake.chat_members(GROUP)[REX] == "member"
    assert await stored_id(services, REX) is not None, "kept while they are still in the group"

    # The check names them and says why the bot cannot act; it tries nothing it would fail at.
    check = await services.members.check()
    assert check is not None and (check.lingering, check.queued) == (1, 0)
    named = await notice(fake, lambda t: T.text("en", "members.check_lingering", names="Rex") in t)
    assert T.text("en", "members.check_cannot_remove") in named
    assert len(calls_of(fake, "banChatMember", REX)) == 1

    # Given the right, the next check removes them, and their id goes.
    fake.set_admin_rights(GROUP, can_restrict_members=True)
    check = await services.members.check()
    assert check is not None and check.queued == 1
    await fake.wait_for("unbanChatMember", timeout=15)
    assert [c.ok for c in calls_of(fake, "banChatMember", REX)] == [False, True]
    assert fake.chat_members(GROUP)[REX] == "left"
    assert await stored_id(services, REX) is None


async def test_a_coordinator_cannot_slip_out_of_the_team_with_forget(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    """/forget would end the role with nobody seeing: no removal from the group, nothing withdrawn, nothing
    in the audit log. A role holder is told to ask an admin; the confirm button (forged or old) is refused
    too."""
    services = bot.app_services()
    await coordinator(services, CORA, "Cora")
    cora = Person(fake, CORA)
    reply = await cora.say("/forget")
    assert reply["text"] == T.text("en", "forget.has_role")
    await cora.press("forget:yes", 1)
    await bot.quiet(fake)
    async with services.db.read() as conn:
        roles = (
            (
                await conn.execute(
                    text("SELECT role FROM user_roles WHERE pseudonym = :p"),
                    {"p": services.pseudonyms.of_user(CORA)},
                )
            )
            .scalars()
            .all()
        )
        refused = (
            await conn.execute(
                text("SELECT count(*) FROM audit_log WHERE action = 'account.forget' AND outcome = 'refused'")
            )
        ).scalar()
    assert roles == ["coordinator"] and refused == 2
    assert await stored_id(services, CORA) is not None
