"""Campaigns on real services and a real SQLite file: subscribing, composing with validation, the
four-eyes rule, enqueueing in batches, unsubscribing and cancelling mid-broadcast, actions, reminders."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.clock import FakeClock
from bot.services.broadcast import Broadcaster
from bot.services.campaigns import Input
from bot.services.outbox import payload_binding
from bot.services.roles import NotAllowed, Refused
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from storage.campaigns import CampaignRepository
from tests.campaign_seed import ready_campaign, seed_subscribers
from tests.conftest import make_settings

ADMIN, SECOND_ADMIN, COORDINATOR, READER = 5001, 5002, 6001, 7001
NOW = datetime.fromisoformat("2026-11-20T06:00:00+00:00")
SUBSCRIBERS = list(range(800_000, 802_500))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Two admins (so the four-eyes rule is on) and a coordinators' chat."""
    return make_settings(tmp_path, admin_ids=frozenset({ADMIN, SECOND_ADMIN}), coordinator_chat_id=-100777)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """The real services on a fake clock, with small broadcast batches."""
    clock = FakeClock(NOW)
    opened = await open_services(settings, clock, build_limiter(settings, clock))
    yield opened
    await opened.close()


def small_batches(services: Services, batch: int = 400) -> Broadcaster:
    """A broadcaster like the bot's, enqueueing `batch` recipients per transaction, one batch per pass."""
    broadcaster = services.broadcaster
    broadcaster._batch, broadcaster._batches_per_pass = batch, 1
    return broadcaster


async def rows(services: Services, kind: str = "campaign") -> list[tuple[str | None, str, dict[str, object]]]:
    """Return (recipient, status, params) of outbox rows of a kind."""
    async with services.db.read() as conn:
        found = (
            await conn.execute(
                text("SELECT uid, recipient, status, payload FROM outbox WHERE kind = :k ORDER BY id"),
                {"k": kind},
            )
        ).all()
    return [
        (
            r.recipient,
            r.status,
            services.cipher.decrypt_json(r.payload, binding=payload_binding(r.uid)) if r.payload else {},
        )
        for r in found
    ]


async def compose(services: Services, author: int, body: str = "Write to <b>Aziza</b> today.") -> int:
    """Compose a draft with text through the same steps a coordinator takes."""
    campaign = await services.campaigns.create(author, author, "Free Aziza")
    await services.campaigns.expect(author, campaign.id, "text")
    await services.campaigns.fill(author, Input(text=body))
    return campaign.id


# ----------------------------------------------------------------------------------------- subscribing


async def test_subscribing_toggling_topics_and_stopping_everything(services: Services) -> None:
    await services.users.seen(READER, "ru")
    assert await services.campaigns.subscribe(READER, READER) == {"campaigns", "hearings", "urgent"}
    assert await services.campaigns.toggle_topic(READER, READER, "urgent") == {"campaigns", "hearings"}
    with pytest.raises(Refused):
        await services.campaigns.toggle_topic(READER, READER, "gossip")
    campaign_id = await ready_campaign(services, ADMIN)
    await services.broadcaster.run_pass()
    assert [status for _, status, _ in await rows(services)] == ["pending"]
    withdrawn = await services.campaigns.unsubscribe(READER)
    assert withdrawn == 1 and [status for _, status, _ in await rows(services)] == ["cancelled"]
    assert await services.campaigns.topics(READER) is None
    del campaign_id


# --------------------------------------------------------------------------------------------- composing


async def test_the_text_is_checked_before_it_is_saved(services: Services) -> None:
    campaign = await services.campaigns.create(ADMIN, ADMIN, "Free Aziza")
    bad = {
        "<b>unclosed": "html.tag_unclosed",
        "<script>alert(1)</script>": "html.tag_unknown",
        "a < b": "html.stray_bracket",
        "x" * 4097: "campaign.too_long",
        "&nbsp;": "html.entity_unknown",
    }
    for body, key in bad.items():
        await services.campaigns.expect(ADMIN, campaign.id, "text")
        with pytest.raises(Refused) as refused:
            await services.campaigns.fill(ADMIN, Input(text=body))
        assert refused.value.key == key, body[:20]
    await services.campaigns.fill(ADMIN, Input(text="Write to <a href='https://amnesty.org'>Aziza</a>"))
    # With an image the text becomes a caption: 1,024 at most.
    await services.campaigns.expect(ADMIN, campaign.id, "image")
    with pytest.raises(Refused) as not_image:
        await services.campaigns.fill(ADMIN, Input(other=True))
    assert not_image.value.key == "campaign.not_an_image"
    await services.campaigns.fill(ADMIN, Input(photo_file_id="photo-1"))
    await services.campaigns.expect(ADMIN, campaign.id, "text")
    with pytest.raises(Refused):
        await services.campaigns.fill(ADMIN, Input(text="y" * 1025))
    for field, value, key in (
        ("link", "javascript:alert(1)", "campaign.link_invalid"),
        ("deadline", "01.01.2020 10:00", "campaign.past"),
        ("deadline", "31.02.2027 10:00", "campaign.bad_time"),
        ("schedule", "19.11.2026 10:00", "campaign.past"),
    ):
        await services.campaigns.expect(ADMIN, campaign.id, field)
        with pytest.raises(Refused) as refused:
            await services.campaigns.fill(ADMIN, Input(text=value))
        assert refused.value.key == key
    await services.campaigns.expect(ADMIN, campaign.id, "template", "ru")
    await services.campaigns.fill(ADMIN, Input(text="Уважаемый господин прокурор…"))
    summary = await services.campaigns.view(ADMIN, campaign.id)
    assert summary.templates == ["ru"] and summary.campaign.image_file_id == "photo-1"
    with pytest.raises(NotAllowed):
        await services.campaigns.create(READER, READER, "Spam")


async def test_four_eyes_for_everyone_and_never_the_author(services: Services) -> None:
    nobody = await compose(services, ADMIN)
    with pytest.raises(Refused) as empty:
        await services.campaigns.send(ADMIN, nobody)
    assert empty.value.key == "campaign.no_audience"
    await seed_subscribers(services, SUBSCRIBERS[:5], language="ru")
    campaign_id = await compose(services, ADMIN)
    # Whoever edited the draft is an author too.
    await services.campaigns.toggle_channels(SECOND_ADMIN, campaign_id)
    await services.campaigns.toggle_channels(SECOND_ADMIN, campaign_id)
    sent = await services.campaigns.send(ADMIN, campaign_id)
    assert sent.status == "awaiting_approval"
    await services.broadcaster.run_pass()
    assert await rows(services) == []  # nothing goes before approval
    with pytest.raises(Refused) as own:
        await services.campaigns.approve(ADMIN, campaign_id)
    assert own.value.key == "campaign.self_approval"
    with pytest.raises(NotAllowed):
        await services.campaigns.approve(READER, campaign_id)
    with pytest.raises(Refused) as editor:
        await services.campaigns.approve(SECOND_ADMIN, campaign_id)
    assert editor.value.key == "campaign.self_approval"
    await services.users.seen(COORDINATOR, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(COORDINATOR, invite.token)
    assert (await services.campaigns.approve(COORDINATOR, campaign_id)).status == "scheduled"
    with pytest.raises(Refused):
        await services.campaigns.approve(COORDINATOR, campaign_id)
    # A narrower audience needs no second pair of eyes.
    other = await compose(services, ADMIN)
    await services.campaigns.set_audience(ADMIN, other, "language", "ru")
    assert (await services.campaigns.send(ADMIN, other)).status == "scheduled"
    with pytest.raises(Refused):
        await services.campaigns.send(ADMIN, other)  # no longer a draft


async def test_a_schedule_in_the_past_or_a_passed_deadline_is_refused(services: Services) -> None:
    campaign_id = await compose(services, ADMIN)
    with pytest.raises(Refused):
        await services.campaigns.send(ADMIN, campaign_id, NOW - timedelta(minutes=1))
    async with services.db.write() as conn:
        await CampaignRepository().set(conn, campaign_id, NOW, deadline=NOW + timedelta(hours=1))
    with pytest.raises(Refused) as late:
        await services.campaigns.send(ADMIN, campaign_id, NOW + timedelta(hours=2))
    assert late.value.key == "campaign.deadline_passed"


# -------------------------------------------------------------------------------------------- broadcast


async def test_enqueueing_goes_in_batches_once_per_person_and_skips_the_blocked(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS)
    blocked = services.pseudonyms.of_user(SUBSCRIBERS[7])
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE users SET active = 0 WHERE pseudonym = :p"), {"p": blocked})
    await services.hearings.register_channel(ADMIN, -100_111)
    await services.hearings.register_channel(ADMIN, -100_222)
    campaign_id = await ready_campaign(services, ADMIN)
    async with services.db.write() as conn:
        await CampaignRepository().set(conn, campaign_id, NOW, include_channels=True)
    broadcaster = small_batches(services)
    passes = 0
    while (await services.campaigns.view(ADMIN, campaign_id)).campaign.status in ("scheduled", "sending"):
        result = await broadcaster.run_pass()
        assert result.enqueued <= 400 + 2
        passes += 1
    assert passes == 7  # 2,499 people in batches of 400
    queued = await rows(services)
    recipients = Counter(r for r, _, _ in queued)
    assert len(queued) == len(SUBSCRIBERS) - 1 + 2 and recipients[blocked] == 0
    assert max(count for r, count in recipients.items() if r is not None) == 1
    channel_posts = [p for r, _, p in queued if r is None]
    assert sorted(p["chat_id"] for p in channel_posts) == [-100_222, -100_111]  # type: ignore[type-var]
    # Channel posts carry no personal buttons; private ones do.
    channel_data = str(channel_posts[0]["reply_markup"])
    assert ":stop" not in channel_data and ":acted" in channel_data
    assert ":stop" in str(queued[-1][2]["reply_markup"])
    # Running the pass again (a restart) creates nothing more.
    await broadcaster.run_pass()
    assert len(await rows(services)) == len(queued)


async def test_unsubscribing_and_cancelling_mid_broadcast(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:1000])
    campaign_id = await ready_campaign(services, ADMIN)
    broadcaster = small_batches(services, 300)
    await broadcaster.run_pass()
    first = await rows(services)
    early = next(
        uid for uid in SUBSCRIBERS[:1000] if services.pseudonyms.of_user(uid) in {r for r, _, _ in first}
    )
    late = next(
        uid for uid in SUBSCRIBERS[:1000] if services.pseudonyms.of_user(uid) not in {r for r, _, _ in first}
    )
    await services.campaigns.unsubscribe(early)
    await services.campaigns.unsubscribe(late)
    await broadcaster.run_pass()
    statuses = {r: s for r, s, _ in await rows(services)}
    assert statuses[services.pseudonyms.of_user(early)] == "cancelled"
    assert services.pseudonyms.of_user(late) not in statuses
    campaign, withdrawn = await services.campaigns.cancel(ADMIN, campaign_id)
    assert campaign.status == "cancelled" and withdrawn == 599
    await broadcaster.run_pass()
    assert Counter(s for _, s, _ in await rows(services)) == {"cancelled": 600}
    with pytest.raises(Refused):
        await services.campaigns.cancel(ADMIN, campaign_id)
    key, _, _ = await services.campaigns.act(SUBSCRIBERS[5], SUBSCRIBERS[5], campaign_id, "acted")
    assert key == "campaign.was_cancelled"
    assert (await services.campaigns.view(ADMIN, campaign_id)).actions == {}


# ---------------------------------------------------------------------------------------------- actions


async def test_actions_count_once_templates_speak_the_readers_language(services: Services) -> None:
    await services.users.seen(READER, "ru")
    await services.campaigns.subscribe(READER, READER)
    campaign_id = await compose(services, ADMIN)
    for language, body in (("en", "Dear Prosecutor"), ("ru", "Уважаемый прокурор")):
        await services.campaigns.expect(ADMIN, campaign_id, "template", language)
        await services.campaigns.fill(ADMIN, Input(text=body))
    # A draft's buttons (a preview, a guessed /start tpl_N link) do nothing, and say so.
    with pytest.raises(Refused):
        await services.campaigns.act(READER, READER, campaign_id, "template")
    async with services.db.write() as conn:
        await CampaignRepository().set(conn, campaign_id, NOW, status="sending")
    assert (await services.campaigns.act(READER, READER, campaign_id, "acted"))[0] == "campaign.acted"
    assert (await services.campaigns.act(READER, READER, campaign_id, "acted"))[0] == "campaign.acted_before"
    key, _, template = await services.campaigns.act(READER, READER, campaign_id, "template")
    assert (key, template) == ("campaign.template_sent", "Уважаемый прокурор")
    await services.users.seen(READER + 1, "uz")
    assert (await services.campaigns.act(READER + 1, READER + 1, campaign_id, "template"))[
        2
    ] == "Dear Prosecutor"
    assert (await services.campaigns.act(READER, READER, campaign_id, "remind"))[0] == "campaign.no_deadline"
    assert (await services.campaigns.view(ADMIN, campaign_id)).actions == {"acted": 1, "template": 2}
    assert (await services.campaigns.act(READER, READER, campaign_id, "stop"))[0] == "campaign.stopped"
    assert await services.campaigns.topics(READER) is None


async def test_one_reminder_before_the_deadline_for_those_who_asked_and_did_not_act(
    services: Services,
) -> None:
    campaign_id = await compose(services, ADMIN)
    async with services.db.write() as conn:
        await CampaignRepository().set(
            conn, campaign_id, NOW, deadline=NOW + timedelta(days=3), status="sent", send_at=NOW
        )
    people = [READER, READER + 1, READER + 2]
    for uid in people:
        await services.users.seen(uid, "en")
        assert (await services.campaigns.act(uid, uid, campaign_id, "remind"))[0] == "campaign.remind_set"
    assert (await services.campaigns.act(READER, READER, campaign_id, "remind"))[
        0
    ] == "campaign.remind_before"
    await services.campaigns.act(READER + 1, READER + 1, campaign_id, "acted")
    await services.broadcaster.run_pass()
    assert await rows(services, "campaign_reminder") == []  # three days out: not yet
    assert isinstance(services.clock, FakeClock)
    services.clock.advance(timedelta(days=2, hours=1).total_seconds())
    await services.broadcaster.run_pass()
    await services.broadcaster.run_pass()
    reminded = await rows(services, "campaign_reminder")
    assert sorted(p["chat_id"] for _, _, p in reminded) == [READER, READER + 2]  # type: ignore[type-var]


async def test_the_ledger_lists_every_delivery_pseudonymously(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:30])
    campaign_id = await ready_campaign(services, ADMIN)
    await services.broadcaster.run_pass()
    out = io.StringIO()
    assert await services.campaigns.ledger(ADMIN, campaign_id, out) == 30
    lines = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert {line["status"] for line in lines} == {"pending"}
    assert all(str(uid) not in out.getvalue() for uid in SUBSCRIBERS[:30])
    with pytest.raises(NotAllowed):
        await services.campaigns.ledger(READER, campaign_id, io.StringIO())
