"""Campaigns over the fake Bot API: subscribe, compose, approve, broadcast to 500 subscribers and two
channels, press actions, unsubscribe mid-broadcast, cancel a broadcast."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import Settings
from messages import catalogs
from tests.campaign_seed import seed_subscribers
from tests.fakebot import FakeBotApi
from tests.fakebot.server import ApiCall
from tests.support.bots import RunningBot
from tests.support.people import Person
from tests.support.settings import make_settings

ADMIN, SECOND_ADMIN = 5001, 5002
COORDINATORS = -100777
CHANNELS = (-100_111, -100_222)
REAL = [9001, 9002, 9003, 9004, 9005]
SEEDED = list(range(900_000, 900_495))
T = catalogs()


@pytest.fixture
def campaign_settings(tmp_path: Path, fake: FakeBotApi) -> Settings:
    """Two admins (four eyes on), a coordinators' chat, quick broadcast passes, a 100 msg/s cap."""
    return make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN, SECOND_ADMIN}),
        coordinator_chat_id=COORDINATORS,
        broadcast_interval_s=0.3,
        rate_global_per_s=100.0,
        rate_private_per_s=20.0,
    )


@pytest.fixture
async def bot(campaign_settings: Settings) -> AsyncIterator[RunningBot]:
    """The running bot."""
    running = RunningBot(campaign_settings)
    await running.start()
    yield running
    await running.stop()


def campaign_posts(fake: FakeBotApi, campaign_id: int) -> list[ApiCall]:
    """Every campaign message delivered (not previews: those carry pv: buttons)."""
    return [
        call
        for call in fake.sent("sendMessage")
        if f"cp:{campaign_id}:acted" in str(call.params.get("reply_markup", ""))
    ]


async def press_and_wait(person: Person, data: str) -> None:
    """Press a button of the newest keyboard and wait for the message it brings."""
    before = len(person.fake.sent("sendMessage", chat_id=person.user_id))
    await person.press(data, person.keyboard_message()["message_id"])
    await person.fake.wait_for("sendMessage", chat_id=person.user_id, count=before + 1, timeout=10)


async def compose(admin: Person, title: str, body: str) -> int:
    """/campaign_new, then the Text button and the text; return the campaign's number."""
    await admin.say(f"/campaign_new {title}")
    campaign_id = int(admin.buttons()[0].split(":")[1])
    await admin.press(f"cc:{campaign_id}:text", admin.keyboard_message()["message_id"])
    await admin.fake.wait_for(
        "sendMessage",
        chat_id=admin.user_id,
        timeout=10,
        predicate=lambda c: "campaign text" in c.params["text"],
    )
    reply = await admin.say(body)
    assert "Campaign C-" in reply["text"], reply["text"]
    return campaign_id


async def test_compose_approve_broadcast_act_and_unsubscribe(fake: FakeBotApi, bot: RunningBot) -> None:
    people = [Person(fake, uid, "ru" if uid == REAL[0] else "en") for uid in REAL]
    for person in people:
        reply = await person.say("/subscribe")
        assert reply["text"] == T.text(person.language, "subscribe.done")
    services = bot.app_services()
    await seed_subscribers(services, SEEDED)
    for channel in CHANNELS:
        await services.hearings.register_channel(ADMIN, channel)

    admin = Person(fake, ADMIN)
    bad = await admin.say("/campaign_new")
    assert bad["text"] == T.text("en", "campaign.usage_new")
    campaign_id = await compose(admin, "Free Aziza", "Write a letter to <b>Aziza</b>")
    # Broken HTML is refused and changes nothing.
    await press_and_wait(admin, f"cc:{campaign_id}:text")
    refused = await admin.say("<b>unclosed")
    assert refused["text"] == T.text("en", "html.tag_unclosed", detail="<b>")
    await admin.say("Write a letter to <b>Aziza</b> before Human Rights Day.")
    for language, template in (
        ("en", "Dear Prosecutor, release Aziza."),
        ("ru", "Уважаемый прокурор, освободите Азизу."),
    ):
        await press_and_wait(admin, f"cc:{campaign_id}:tpl:{language}")
        await admin.say(template)
    await press_and_wait(admin, f"cc:{campaign_id}:channels")
    await admin.press(f"cc:{campaign_id}:preview", admin.keyboard_message()["message_id"])
    (preview,) = await fake.wait_for(
        "sendMessage",
        chat_id=ADMIN,
        timeout=10,
        predicate=lambda c: f"pv:{campaign_id}:acted" in str(c.params),
    )
    assert "Human Rights Day" in preview.params["text"]
    await admin.press(f"cc:{campaign_id}:send", admin.keyboard_message()["message_id"])
    (request,) = await fake.wait_for(
        "sendMessage",
        chat_id=COORDINATORS,
        timeout=10,
        predicate=lambda c: f"ca:{campaign_id}:approve" in str(c.params),
    )
    assert campaign_posts(fake, campaign_id) == []

    async def approve(user_id: int) -> str:
        update = fake.add_callback_query(
            user_id=user_id,
            data=f"ca:{campaign_id}:approve",
            message_id=request.result["message_id"],
            chat_id=COORDINATORS,
            chat_type="supergroup",
        )
        query_id = str(update["callback_query"]["id"])
        (answer,) = await fake.wait_for(
            "answerCallbackQuery",
            timeout=10,
            predicate=lambda c: str(c.params.get("callback_query_id")) == query_id,
        )
        return str(answer.params.get("text"))

    assert await approve(ADMIN) == T.plain("en", "campaign.self_approval")
    assert await approve(9999) == T.plain("en", "coord.refused")
    assert await approve(SECOND_ADMIN) == T.plain("en", "campaign.approved", code=f"C-{campaign_id}")

    # Mid-broadcast, a real subscriber who has not received it yet unsubscribes: nothing more reaches them.
    await fake.wait_for(
        "sendMessage", timeout=30, count=60, predicate=lambda c: f"cp:{campaign_id}:" in str(c.params)
    )
    reached = {c.params["chat_id"] for c in campaign_posts(fake, campaign_id)}
    leaver = next((p for p in people[1:] if p.user_id not in reached), None)
    if leaver is not None:
        reply = await leaver.say("/unsubscribe")
        if f"cp:{campaign_id}:" in str(reply):
            # The campaign reached them just before the command was handled: the answer comes next.
            (answer,) = await fake.wait_for(
                "sendMessage",
                chat_id=leaver.user_id,
                timeout=10,
                predicate=lambda c: "/subscribe" in c.params["text"],
            )
            assert "/subscribe" in answer.params["text"]
            leaver = None  # reached after all: counted with the others
        else:
            assert "/subscribe" in reply["text"]
    total = len(REAL) + len(SEEDED) + len(CHANNELS) - (1 if leaver else 0)
    await fake.wait_for(
        "sendMessage",
        timeout=60,
        count=total,
        predicate=lambda c: f"cp:{campaign_id}:acted" in str(c.params.get("reply_markup", "")),
    )
    await asyncio.sleep(1.0)
    posts = campaign_posts(fake, campaign_id)
    counts = Counter(c.params["chat_id"] for c in posts)
    assert len(posts) == total and max(counts.values()) == 1
    assert set(CHANNELS) <= set(counts)
    if leaver is not None:
        assert leaver.user_id not in counts
    assert fake.received_429 == 0

    # One tap: counted once; the template arrives in the reader's language.
    reader = people[0]
    message_id = next(c.result["message_id"] for c in posts if c.params["chat_id"] == reader.user_id)
    await reader.press(f"cp:{campaign_id}:acted", message_id)
    await reader.press(f"cp:{campaign_id}:acted", message_id)
    assert reader.answers()[-2:] == [T.plain("ru", "campaign.acted"), T.plain("ru", "campaign.acted_before")]
    await reader.press(f"cp:{campaign_id}:template", message_id)
    await fake.wait_for(
        "sendMessage",
        chat_id=reader.user_id,
        timeout=10,
        predicate=lambda c: c.params["text"] == "Уважаемый прокурор, освободите Азизу.",
    )
    summary = await services.campaigns.view(ADMIN, campaign_id)
    assert summary.actions == {"acted": 1, "template": 1}
    # The author's status message shows the final figures.
    await fake.wait_for(
        "editMessageText",
        chat_id=ADMIN,
        timeout=15,
        predicate=lambda c: f"sent {total}" in c.params.get("text", ""),
    )


async def test_cancel_a_running_broadcast(fake: FakeBotApi, bot: RunningBot) -> None:
    admin = Person(fake, ADMIN)
    await admin.say("/help")
    services = bot.app_services()
    await seed_subscribers(services, SEEDED)
    campaign_id = await compose(admin, "Hearing tomorrow", "Come to the court at 10:00.")
    await press_and_wait(admin, f"cc:{campaign_id}:audience")
    await press_and_wait(admin, f"cc:{campaign_id}:aud:language:en")
    # 495 readers of one language are more than one person may reach alone: a colleague approves.
    await press_and_wait(admin, f"cc:{campaign_id}:send")
    assert (await services.campaigns.approve(SECOND_ADMIN, campaign_id))[0].status == "scheduled"
    await fake.wait_for(
        "sendMessage", timeout=30, count=50, predicate=lambda c: f"cp:{campaign_id}:" in str(c.params)
    )
    reply = await admin.say(f"/campaign_cancel {campaign_id}")
    assert reply["text"].startswith(f"C-{campaign_id}")
    sent_at_cancel = len(campaign_posts(fake, campaign_id))
    await asyncio.sleep(1.5)
    after = len(campaign_posts(fake, campaign_id))
    assert after <= sent_at_cancel + 4  # at most what was in flight
    assert after < len(SEEDED)
    summary = await services.campaigns.view(ADMIN, campaign_id)
    assert summary.campaign.status == "cancelled"
    assert summary.deliveries.get("cancelled", 0) + summary.deliveries.get("sent", 0) == len(SEEDED)
