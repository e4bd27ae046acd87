"""Approval by reach over the fake Bot API: one person's per-language campaigns add up within the window, a
single campaign over the threshold waits whatever its audience, a revoked author's campaign never goes out,
and a coordinator's campaign button pressed outside their own private chat is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.services.campaigns.compose import Input
from bot.settings import Settings
from bot.wiring import Services
from messages import catalogs
from storage.campaigns import CampaignRepository
from storage.users import UserRepository
from tests.campaign_seed import seed_subscribers
from tests.e2e.test_campaigns import campaign_posts, press_and_wait
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import Person
from tests.support.settings import make_settings

ADMIN, SECOND_ADMIN, COORDINATOR, OTHER_COORDINATOR = 5001, 5002, 6001, 6002
COORDINATORS = -100777
FOREIGN_GROUP = -100999
ENGLISH = list(range(910_000, 910_030))
RUSSIAN = list(range(920_000, 920_030))
KYRGYZ = list(range(930_000, 930_500))  # 560 people in all: a tenth is 56, so the threshold stays 50
T = catalogs()


@pytest.fixture
def reach_settings(tmp_path: Path, fake: FakeBotApi) -> Settings:
    """Two admins (four eyes on), a coordinators' chat, quick broadcast passes, the default reach of 50."""
    return make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN, SECOND_ADMIN}),
        coordinator_chat_id=COORDINATORS,
        broadcast_interval_s=0.3,
        rate_global_per_s=200.0,
        rate_private_per_s=20.0,
    )


@pytest.fixture
async def bot(fake: FakeBotApi, reach_settings: Settings) -> AsyncIterator[RunningBot]:
    """The running bot with 30 English, 30 Russian and 500 Kyrgyz subscribers."""
    running = RunningBot(reach_settings)
    await running.start()
    await Person(fake, ADMIN).say("/help")  # the bot is up
    services = running.app_services()
    await seed_subscribers(services, ENGLISH, language="en")
    await seed_subscribers(services, RUSSIAN, language="ru")
    await seed_subscribers(services, KYRGYZ, language="ky")
    yield running
    await running.stop()


async def compose(author: Person, title: str, body: str) -> int:
    """/campaign_new, then the Text button and the text; return the campaign's number."""
    await author.say(f"/campaign_new {title}")
    campaign_id = int(author.buttons()[0].split(":")[1])
    await press_and_wait(author, f"cc:{campaign_id}:text")
    reply = await author.say(body)
    assert f"Campaign C-{campaign_id}" in reply["text"], reply["text"]
    return campaign_id


async def language_campaign(admin: Person, title: str, language: str) -> int:
    """Compose a campaign to the readers of one language through the bot; return its number."""
    campaign_id = await compose(admin, title, f"{title}: come to the court at 10:00.")
    await press_and_wait(admin, f"cc:{campaign_id}:audience")
    await press_and_wait(admin, f"cc:{campaign_id}:aud:language:{language}")
    return campaign_id


async def approval_request(fake: FakeBotApi, campaign_id: int) -> str:
    """Wait for the approval request in the coordinators' chat; return its text."""
    (request,) = await fake.wait_for(
        "sendMessage",
        chat_id=COORDINATORS,
        timeout=10,
        predicate=lambda c: f"ca:{campaign_id}:approve" in str(c.params),
    )
    return str(request.params["text"])


async def status(services: Services, campaign_id: int) -> str:
    """Return a campaign's status as stored."""
    async with services.db.read() as conn:
        return (await CampaignRepository().get(conn, campaign_id)).status


async def test_per_language_campaigns_need_approval_once_the_window_crosses_the_threshold(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    admin = Person(fake, ADMIN)
    english = await language_campaign(admin, "Hearing tomorrow", "en")
    await press_and_wait(admin, f"cc:{english}:send")
    await fake.wait_for(
        "sendMessage",
        timeout=30,
        count=len(ENGLISH),
        predicate=lambda c: f"cp:{english}:acted" in str(c.params.get("reply_markup", "")),
    )
    # The same call in Russian: 30 more people, 60 with the first within the window.
    russian = await language_campaign(admin, "Завтра суд", "ru")
    await press_and_wait(admin, f"cc:{russian}:send")
    window = T.text("en", "campaign.reach_window", people=30, window=60, hours="24", threshold=50)
    assert window in admin.last_text()  # the author is told why it waits
    request = await approval_request(fake, russian)
    assert request.startswith(T.text("en", "campaign.approval_request")) and window in request
    await asyncio.sleep(1.0)  # a few broadcaster passes
    assert campaign_posts(fake, russian) == [] and await status(services, russian) == "awaiting_approval"
    # The author cannot approve it; a colleague's /campaign_approve shows the window total too.
    own = await admin.say(f"/campaign_approve {russian}")
    assert own["text"] == T.text("en", "campaign.self_approval")
    approver = Person(fake, SECOND_ADMIN)
    reply = await approver.say(f"/campaign_approve {russian}")
    assert reply["text"] == T.text("en", "campaign.approved", code=f"C-{russian}") + "\n" + window
    await fake.wait_for(
        "sendMessage",
        timeout=30,
        count=len(RUSSIAN),
        predicate=lambda c: f"cp:{russian}:acted" in str(c.params.get("reply_markup", "")),
    )
    async with services.db.read() as conn:
        details = (
            await conn.execute(
                text(
                    "SELECT action, detail FROM audit_log WHERE target = :t AND action IN"
                    " ('campaign.send', 'campaign.approve') AND outcome = 'ok' ORDER BY id"
                ),
                {"t": f"C-{russian}"},
            )
        ).all()
    assert [tuple(d) for d in details] == [
        ("campaign.send", "awaiting_approval reach 30 window 60 threshold 50"),
        ("campaign.approve", "reach 30 window 60 threshold 50"),
    ]


async def test_one_campaign_over_the_threshold_to_one_language_needs_approval(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    author = Person(fake, SECOND_ADMIN)
    kyrgyz = await language_campaign(author, "Сот эртең", "ky")
    await press_and_wait(author, f"cc:{kyrgyz}:send")
    alone = T.text("en", "campaign.reach", people=500, threshold=50)
    assert alone in await approval_request(fake, kyrgyz)
    await asyncio.sleep(1.0)
    assert campaign_posts(fake, kyrgyz) == [] and await status(services, kyrgyz) == "awaiting_approval"


async def scheduled_by(services: Services, user_id: int, title: str) -> int:
    """A coordinator's campaign to the English readers, scheduled an hour from now; return its number."""
    campaigns = services.campaigns
    campaign = await campaigns.create(user_id, user_id, title)
    await campaigns.expect(user_id, campaign.id, "text")
    await campaigns.fill(user_id, Input(text="Come to the back gate of the GKNB at 18:00."))
    await campaigns.set_audience(user_id, campaign.id, "language", "en")
    sent = await campaigns.send(user_id, campaign.id, services.clock.now() + timedelta(hours=1))
    assert sent.status == "scheduled"
    return campaign.id


async def join_team(services: Services, user_id: int) -> str:
    """Make someone a coordinator through an invite; return their pseudonym."""
    await services.users.seen(user_id, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(user_id, invite.token)
    return services.pseudonyms.of_user(user_id)


async def when_the_hour_has_passed(
    fake: FakeBotApi, services: Services, stopped: int, trusted: int
) -> list[tuple[object, ...]]:
    """Make both campaigns due now, wait until the trusted one reached its 30 people and a little more;
    return the audit entries about withdrawn campaigns."""
    async with services.db.write() as conn:
        for campaign_id in (stopped, trusted):
            await CampaignRepository().set(
                conn, campaign_id, services.clock.now(), send_at=services.clock.now()
            )
    await fake.wait_for(
        "sendMessage",
        timeout=30,
        count=len(ENGLISH),
        predicate=lambda c: f"cp:{trusted}:acted" in str(c.params.get("reply_markup", "")),
    )
    await asyncio.sleep(1.0)  # a few more broadcaster passes
    assert campaign_posts(fake, stopped) == [] and await status(services, stopped) == "cancelled"
    async with services.db.read() as conn:
        entries = await conn.execute(
            text(
                "SELECT actor, target, outcome FROM audit_log WHERE action = 'campaign.withdraw' ORDER BY id"
            )
        )
        return [tuple(e) for e in entries]


async def test_revoking_an_author_withdraws_their_scheduled_campaign(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    coordinator, admin = await join_team(services, COORDINATOR), services.pseudonyms.of_user(ADMIN)
    stopped = await scheduled_by(services, COORDINATOR, "Come to the back gate")
    trusted = await scheduled_by(services, ADMIN, "An admin's campaign")
    async with services.db.write() as conn:
        # What /revoke does, in its one transaction: the role goes, and with it the author's campaigns.
        await UserRepository().revoke(conn, coordinator, "coordinator")
        assert await services.campaigns.withdraw_author(conn, coordinator, admin) == 1
    assert await when_the_hour_has_passed(fake, services, stopped, trusted) == [(admin, f"C-{stopped}", "ok")]


async def test_revoke_in_telegram_withdraws_the_authors_scheduled_campaign(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    await join_team(services, COORDINATOR)
    await services.team.set_name(COORDINATOR, "Rex")
    stopped = await scheduled_by(services, COORDINATOR, "Come to the back gate")
    trusted = await scheduled_by(services, ADMIN, "An admin's campaign")
    await Person(fake, ADMIN).say("/revoke Rex")
    admin = services.pseudonyms.of_user(ADMIN)
    assert await when_the_hour_has_passed(fake, services, stopped, trusted) == [(admin, f"C-{stopped}", "ok")]
    async with services.db.read() as conn:
        detail = (
            await conn.execute(text("SELECT detail FROM audit_log WHERE action = 'team.revoke'"))
        ).scalar_one()
    assert detail == "freed 0, campaigns 1, questions 0"


async def test_the_broadcaster_refuses_a_campaign_whose_author_lost_the_role(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    coordinator = await join_team(services, OTHER_COORDINATOR)
    stopped = await scheduled_by(services, OTHER_COORDINATOR, "Come to the back gate")
    trusted = await scheduled_by(services, ADMIN, "An admin's campaign")
    async with services.db.write() as conn:
        # The role goes and nothing withdraws (an admin dropped from the settings, a bug, a hand in the
        # database): only the broadcaster's own check stands between the campaign and 30 people.
        await UserRepository().revoke(conn, coordinator, "coordinator")
    assert await when_the_hour_has_passed(fake, services, stopped, trusted) == [
        ("system", f"C-{stopped}", "refused")
    ]


async def test_a_compose_button_outside_the_pressers_private_chat_is_refused(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    admin = Person(fake, ADMIN)
    draft = await compose(admin, "Free Aziza", "Write a letter to <b>Aziza</b>.")

    async def press(data: str, chat_id: int, chat_type: str) -> str:
        update = fake.add_callback_query(
            user_id=ADMIN, data=data, message_id=1, chat_id=chat_id, chat_type=chat_type
        )
        query_id = str(update["callback_query"]["id"])
        (answer,) = await fake.wait_for(
            "answerCallbackQuery",
            timeout=10,
            predicate=lambda c: str(c.params.get("callback_query_id")) == query_id,
        )
        return str(answer.params.get("text"))

    async def refused() -> int:
        async with services.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM audit_log WHERE action = 'campaign.button'"
                            " AND outcome = 'refused' AND detail = 'wrong chat'"
                        )
                    )
                ).scalar()
                or 0
            )

    async def campaign_row() -> tuple[object, ...]:
        async with services.db.read() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT status, include_channels, audience, updated_at FROM campaigns WHERE id = :i"
                    ),
                    {"i": draft},
                )
            ).one()
        return tuple(row)

    before = await campaign_row()
    wrong_chat = T.plain("en", "coord.wrong_chat")
    # A stranger's group, the coordinators' chat (a draft's card is for its author's eyes) and someone
    # else's private chat: each press is refused, audited, and shows and changes nothing.
    places = ((FOREIGN_GROUP, "supergroup"), (COORDINATORS, "supergroup"), (SECOND_ADMIN, "private"))
    for count, (chat_id, chat_type) in enumerate(places, start=1):
        for action in ("channels", "preview"):
            assert await press(f"cc:{draft}:{action}", chat_id, chat_type) == wrong_chat
        assert await refused() == 2 * count
    await asyncio.sleep(0.5)  # anything the presses wrongly queued would have gone out by now
    assert [fake.sent(chat_id=chat_id) for chat_id, _ in places] == [[], [], []]
    assert await campaign_row() == before
    # In the author's own chat the same press works.
    assert await press(f"cc:{draft}:channels", ADMIN, "private") == T.plain("en", "campaign.saved")
    assert (await campaign_row())[1]
