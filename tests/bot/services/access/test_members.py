"""The coordinators' group kept to the team, on real services and a real SQLite file: which ids are kept
and when they go, the two steps of a removal, strangers, and how Telegram's refusals are read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.domain.identity import bot_id_of
from bot.runtime.clock import FakeClock
from bot.runtime.outbox import NOTICE_KIND
from bot.security.bindings import payload_binding
from bot.services.access.members import BAN_KIND, UNBAN_KIND, ban_verdict, unban_done
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from messages import Safe, catalogs
from storage.members import RowOutcome
from tests.conftest import make_settings

ADMIN, OTHER_ADMIN = 5001, 5002
AIDA, BEK, EVE = 6001, 6002, 6003
GROUP = -1_001_234_500_777
NOW = datetime.fromisoformat("2026-11-20T06:00:00+00:00")
T = catalogs()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Two admins from settings and a coordinators' group."""
    return make_settings(tmp_path, admin_ids=frozenset({ADMIN, OTHER_ADMIN}), coordinator_chat_id=GROUP)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """The real services on a fake clock (nothing is sent: rows stay in the outbox)."""
    opened = await start(settings)
    yield opened
    await opened.close()


async def start(settings: Settings) -> Services:
    """Open the services as the bot does at start."""
    clock = FakeClock(NOW)
    return await open_services(settings, clock, build_limiter(settings, clock))


async def join(services: Services, user_id: int, name: str | None = None) -> None:
    """Make a coordinator with an invite."""
    await services.users.seen(user_id, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(user_id, invite.token)
    if name is not None:
        await services.team.set_name(user_id, name)


async def kept(services: Services) -> dict[str, int]:
    """Return the ids the database keeps, opened, by pseudonym."""
    async with services.db.read() as conn:
        found = (await conn.execute(text("SELECT pseudonym, telegram_id FROM coordinator_ids"))).all()
    return {
        pseudonym: int(
            services.cipher.decrypt_text(sealed, binding=f"coordinator_ids.telegram_id:{pseudonym}")
        )
        for pseudonym, sealed in found
    }


async def outbox_rows(services: Services, where: str = "1=1") -> list[dict[str, Any]]:
    """Return outbox rows with their parameters, oldest first."""
    async with services.db.read() as conn:
        found = (await conn.execute(text(f"SELECT * FROM outbox WHERE {where} ORDER BY id"))).mappings()  # noqa: S608
        result = []
        for row in found:
            item = dict(row)
            if row["payload"] is not None:
                item["params"] = services.cipher.decrypt_json(
                    row["payload"], binding=payload_binding(row["uid"])
                )
            result.append(item)
    return result


async def sent(services: Services, kind: str, status: str, error: str | None = None) -> None:
    """Write what the delivery worker would after Telegram answered a removal's row."""
    async with services.db.write() as conn:
        await conn.execute(
            text(
                "UPDATE outbox SET status = :s, last_error = :e, payload = NULL"
                " WHERE kind = :k AND status = 'pending'"
            ),
            {"s": status, "e": error, "k": kind},
        )


async def notices(services: Services) -> list[str]:
    """Return the texts of the admin notices queued, one per notice (the first admin's copy)."""
    return [
        row["params"]["text"]
        for row in await outbox_rows(services, f"kind = '{NOTICE_KIND}'")
        if row["params"]["chat_id"] == ADMIN
    ]


# ------------------------------------------------------------------------------------------- which ids


async def test_ids_are_kept_sealed_for_role_holders_only(services: Services) -> None:
    pseudonym = services.pseudonyms.of_user
    assert await kept(services) == {pseudonym(ADMIN): ADMIN, pseudonym(OTHER_ADMIN): OTHER_ADMIN}
    await services.users.seen(EVE, "en")
    await join(services, AIDA)
    assert (await kept(services))[pseudonym(AIDA)] == AIDA
    assert pseudonym(EVE) not in await kept(services), "someone without a role is never kept"
    async with services.db.read() as conn:
        raw = (await conn.execute(text("SELECT telegram_id FROM coordinator_ids"))).scalars().all()
    assert all(str(AIDA).encode() not in bytes(value) for value in raw)
    # A sealed id moved to another person's row no longer opens.
    async with services.db.write() as conn:
        await conn.execute(
            text(
                "UPDATE coordinator_ids SET telegram_id ="
                " (SELECT telegram_id FROM coordinator_ids WHERE pseudonym = :a) WHERE pseudonym = :b"
            ),
            {"a": pseudonym(AIDA), "b": pseudonym(ADMIN)},
        )
    with pytest.raises(Exception, match="authenticate"):
        await kept(services)


async def test_a_coordinator_from_before_is_kept_when_they_next_write_and_forgotten_on_forget(
    services: Services,
) -> None:
    await join(services, AIDA)
    aida = services.pseudonyms.of_user(AIDA)
    async with services.db.write() as conn:
        await conn.execute(text("DELETE FROM coordinator_ids WHERE pseudonym = :p"), {"p": aida})
    await services.members.seen(AIDA, aida)
    assert (await kept(services))[aida] == AIDA
    # Seen once: later updates cost nothing, not even a read (the row is not looked at again).
    async with services.db.write() as conn:
        await conn.execute(text("DELETE FROM coordinator_ids WHERE pseudonym = :p"), {"p": aida})
    await services.members.seen(AIDA, aida)
    assert aida not in await kept(services)
    await services.members.seen(AIDA, aida)
    await join(services, BEK)
    bek = services.pseudonyms.of_user(BEK)
    await services.reports.forget(BEK)
    assert bek not in await kept(services), "/forget takes the id with the person"


async def test_admins_from_settings_are_kept_at_every_start(settings: Settings) -> None:
    services = await start(settings)
    await services.close()
    services = await start(replace(settings, admin_ids=frozenset({ADMIN, OTHER_ADMIN, 5003})))
    try:
        assert services.pseudonyms.of_user(5003) in await kept(services)
    finally:
        await services.close()


# -------------------------------------------------------------------------------------- a role ends


async def test_revoking_queues_the_ban_and_holds_the_unban_until_the_ban_went_through(
    services: Services,
) -> None:
    await join(services, AIDA, "Aida")
    aida = services.pseudonyms.of_user(AIDA)
    await services.team.revoke(ADMIN, "Aida")
    ban, unban = await outbox_rows(services, f"kind IN ('{BAN_KIND}', '{UNBAN_KIND}')")
    assert (ban["method"], ban["status"], ban["params"]) == (
        "banChatMember",
        "pending",
        {"chat_id": GROUP, "user_id": AIDA, "revoke_messages": True},
    )
    assert (unban["method"], unban["status"], unban["params"]) == (
        "unbanChatMember",
        "held",
        {"chat_id": GROUP, "user_id": AIDA, "only_if_banned": True},
    )
    assert ban["ref"] == unban["ref"] and ban["recipient"] is None
    assert await services.members.follow_removals() == 0, "nothing moves while the ban is on its way"
    assert aida in await kept(services), "kept until Telegram has them out"

    await sent(services, BAN_KIND, "sent")
    assert await services.members.follow_removals() == 1
    (unban,) = await outbox_rows(services, f"kind = '{UNBAN_KIND}'")
    assert unban["status"] == "pending"
    assert aida not in await kept(services)
    await sent(services, UNBAN_KIND, "sent")
    assert await services.members.follow_removals() == 1
    assert await services.members.follow_removals() == 0, "done: nothing left to follow"
    assert await notices(services) == []


async def test_a_refused_ban_drops_the_unban_and_tells_the_admins_what_to_do(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await services.team.revoke(ADMIN, "Aida")
    await sent(services, BAN_KIND, "dead", "400: Bad Request: user is an administrator of the chat")
    await services.members.follow_removals()
    (unban,) = await outbox_rows(services, f"kind = '{UNBAN_KIND}'")
    assert (unban["status"], unban["payload"]) == ("cancelled", None)
    reason = Safe(T.text("en", "members.reason_admin"))
    assert await notices(services) == [T.text("en", "members.remove_failed", name="Aida", reason=reason)]
    assert len(await outbox_rows(services, f"kind = '{NOTICE_KIND}'")) == 2, "every admin"
    assert services.pseudonyms.of_user(AIDA) in await kept(services), "for the next check to name them"
    assert await services.members.follow_removals() == 0


async def test_an_unban_a_basic_group_does_not_have_is_no_failure(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await services.team.revoke(ADMIN, "Aida")
    await sent(services, BAN_KIND, "sent")
    await services.members.follow_removals()
    await sent(
        services,
        UNBAN_KIND,
        "dead",
        "400: Bad Request: method is available for supergroup and channel chats only",
    )
    await services.members.follow_removals()
    assert await notices(services) == []


async def test_an_unlifted_ban_is_told(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await services.team.revoke(ADMIN, "Aida")
    await sent(services, BAN_KIND, "sent")
    await services.members.follow_removals()
    await sent(
        services, UNBAN_KIND, "dead", "400: Bad Request: not enough rights to restrict/unrestrict chat member"
    )
    await services.members.follow_removals()
    assert await notices(services) == [T.text("en", "members.unban_failed", name="Aida")]


async def test_a_role_ending_with_no_id_known_is_told_and_audited(services: Services) -> None:
    await join(services, AIDA, "Aida")
    async with services.db.write() as conn:
        await conn.execute(
            text("DELETE FROM coordinator_ids WHERE pseudonym = :p"), {"p": services.pseudonyms.of_user(AIDA)}
        )
    await services.team.revoke(ADMIN, "Aida")
    assert not await outbox_rows(services, f"kind = '{BAN_KIND}'")
    assert await notices(services) == [T.text("en", "members.unknown_id", name="Aida")]
    async with services.db.read() as conn:
        audited = (
            await conn.execute(text("SELECT outcome, detail FROM audit_log WHERE action = 'members.remove'"))
        ).all()
    assert [tuple(row) for row in audited] == [("refused", "id unknown")]


async def test_without_a_group_a_role_ending_just_forgets_the_id(tmp_path: Path) -> None:
    services = await start(make_settings(tmp_path, admin_ids=frozenset({ADMIN})))
    try:
        await join(services, AIDA, "Aida")
        await services.team.revoke(ADMIN, "Aida")
        assert services.pseudonyms.of_user(AIDA) not in await kept(services)
        assert not await outbox_rows(services, f"kind = '{BAN_KIND}'")
    finally:
        await services.close()


# ------------------------------------------------------------------------------------------ strangers


async def test_a_stranger_is_reported_once_per_update_and_a_coordinator_is_no_news(
    services: Services, settings: Settings
) -> None:
    await join(services, AIDA)
    assert not await services.members.arrived(GROUP, AIDA, "Aida", 10)
    assert not await services.members.arrived(-100555, EVE, "Eve", 11), "another group is not watched"
    assert await services.members.arrived(GROUP, EVE, "Eve @eve", 12)
    assert await services.members.arrived(GROUP, EVE, "Eve @eve", 12)  # the same update, retried
    assert await notices(services) == [T.text("en", "members.stranger_joined", who="Eve @eve")]
    assert not await outbox_rows(services, f"kind = '{BAN_KIND}'")
    assert not await services.members.arrived(
        GROUP, bot_id_of(settings.bot_token.get_secret_value()), "me", 13
    )
    async with services.db.read() as conn:
        audited = (
            await conn.execute(text("SELECT target FROM audit_log WHERE action = 'members.stranger'"))
        ).all()
    assert [row[0] for row in audited] == [services.pseudonyms.of_user(EVE)]


async def test_strangers_are_removed_when_the_settings_say_so(settings: Settings) -> None:
    services = await start(replace(settings, remove_strangers=True))
    try:
        await services.members.arrived(GROUP, EVE, "Eve", 12)
        await services.members.arrived(GROUP, EVE, "Eve", 12)
        bans = await outbox_rows(services, f"kind = '{BAN_KIND}'")
        assert [row["params"]["user_id"] for row in bans] == [EVE], "queued once"
        assert await notices(services) == [T.text("en", "members.stranger_removed", who="Eve")]
        await sent(
            services,
            BAN_KIND,
            "dead",
            "400: Bad Request: not enough rights to restrict/unrestrict chat member",
        )
        await services.members.follow_removals()
        someone = T.plain("en", "members.someone")
        reason = Safe(T.text("en", "members.reason_rights"))
        assert (await notices(services))[-1] == T.text(
            "en", "members.remove_failed", name=someone, reason=reason
        )
        assert services.pseudonyms.of_user(EVE) not in await kept(services)
    finally:
        await services.close()


# ------------------------------------------------------------------------------- Telegram's answers


@pytest.mark.parametrize(
    ("status", "error", "verdict"),
    [
        ("sent", None, "done"),
        ("unknown", "outcome unknown twice: timeout", "done"),
        ("dead", "400: Bad Request: not enough rights to restrict/unrestrict chat member", "rights"),
        ("dead", "400: Bad Request: CHAT_ADMIN_REQUIRED", "rights"),
        ("blocked", "403: Forbidden: bot was kicked from the supergroup chat", "rights"),
        ("dead", "400: Bad Request: user is an administrator of the chat", "admin"),
        ("dead", "400: Bad Request: can't remove chat owner", "owner"),
        ("dead", "400: Bad Request: USER_NOT_PARTICIPANT", "absent"),
        ("dead", "400: Bad Request: PARTICIPANT_ID_INVALID", "absent"),
        ("dead", "gave up after 20 attempts: 502: Bad Gateway", "other"),
    ],
)
def test_ban_answers_are_read_like_telegram_words_them(status: str, error: str | None, verdict: str) -> None:
    assert ban_verdict(status, error) == verdict


def test_unban_answers() -> None:
    assert unban_done(RowOutcome(UNBAN_KIND, "sent", None))
    assert unban_done(
        RowOutcome(
            UNBAN_KIND, "dead", "400: Bad Request: method is available for supergroup and channel chats only"
        )
    )
    assert not unban_done(
        RowOutcome(
            UNBAN_KIND, "dead", "400: Bad Request: not enough rights to restrict/unrestrict chat member"
        )
    )
    assert bot_id_of("123456:ABC") == 123456 and bot_id_of("nonsense") == 0
