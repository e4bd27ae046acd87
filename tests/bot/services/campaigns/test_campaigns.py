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

from bot.domain.errors import Refused
from bot.runtime.clock import FakeClock
from bot.security.bindings import payload_binding
from bot.services.access.roles import NotAllowed
from bot.services.campaigns.broadcast import Broadcaster
from bot.services.campaigns.compose import APPROVAL_FLOOR, Input, approval_threshold
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from storage.campaigns import Campaign, CampaignRepository
from storage.users import UserRepository
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


async def join(services: Services, user_id: int) -> None:
    """Make someone a coordinator through an invite, as the bot does."""
    await services.users.seen(user_id, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(user_id, invite.token)


async def audit_details(services: Services, action: str) -> list[str | None]:
    """Return the details of the audit log's entries of an action, oldest first."""
    async with services.db.read() as conn:
        found = await conn.execute(
            text("SELECT detail FROM audit_log WHERE action = :a AND outcome = 'ok' ORDER BY id"),
            {"a": action},
        )
        return list(found.scalars())


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


async def test_four_eyes_above_the_reach_and_never_the_author(services: Services) -> None:
    nobody = await compose(services, ADMIN)
    with pytest.raises(Refused) as empty:
        await services.campaigns.send(ADMIN, nobody)
    assert empty.value.key == "campaign.no_audience"
    await seed_subscribers(services, SUBSCRIBERS[:60], language="ru")
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
    await join(services, COORDINATOR)
    approved, reach = await services.campaigns.approve(COORDINATOR, campaign_id)
    assert approved.status == "scheduled" and approved.approved_by == services.pseudonyms.of_user(COORDINATOR)
    # 60 subscribers: a tenth is 6, so the floor of 10 is what one person may reach alone.
    assert (reach.people, reach.window, reach.threshold, reach.above) == (60, 60, 10, True)
    with pytest.raises(Refused):
        await services.campaigns.approve(COORDINATOR, campaign_id)
    assert await audit_details(services, "campaign.approve") == ["reach 60 window 60 threshold 10"]
    assert await audit_details(services, "campaign.send") == [
        "awaiting_approval reach 60 window 60 threshold 10"
    ]
    # Within the reach, another person's campaign needs no second pair of eyes.
    await seed_subscribers(services, SUBSCRIBERS[60:65], language="uz")
    other = await compose(services, COORDINATOR)
    await services.campaigns.set_audience(COORDINATOR, other, "language", "uz")
    assert (await services.campaigns.send(COORDINATOR, other)).status == "scheduled"
    with pytest.raises(Refused):
        await services.campaigns.send(COORDINATOR, other)  # no longer a draft


async def test_whoever_sent_a_colleagues_draft_may_not_approve_it(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:30], language="ru")
    await join(services, COORDINATOR)
    campaign_id = await compose(services, ADMIN)
    assert (await services.campaigns.send(COORDINATOR, campaign_id)).status == "awaiting_approval"
    with pytest.raises(Refused) as sender:
        await services.campaigns.approve(COORDINATOR, campaign_id)
    assert sender.value.key == "campaign.self_approval"
    assert (await services.campaigns.approve(SECOND_ADMIN, campaign_id))[0].status == "scheduled"


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


# ------------------------------------------------------------------------------------------------- reach


async def test_reach_counts_each_person_once_as_the_broadcaster_delivers(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:20], language="en")
    await seed_subscribers(services, SUBSCRIBERS[20:35], language="ru")
    await seed_subscribers(services, SUBSCRIBERS[35:40], language="ru", topics="hearings")  # campaigns off
    async with services.db.write() as conn:
        for uid in SUBSCRIBERS[:2]:  # they blocked the bot
            await conn.execute(
                text("UPDATE users SET active = 0 WHERE pseudonym = :p"),
                {"p": services.pseudonyms.of_user(uid)},
            )
    case = await services.hearings.create_case(ADMIN, "Aziza", "Blogger", "Art. 330", True)
    for uid in [*SUBSCRIBERS[5:8], READER, READER + 1]:  # three subscribers, two who only follow the case
        await services.users.seen(uid, "en")
        await services.hearings.follow(uid, uid, case)
    repo = CampaignRepository()

    async def draft(audience: str, value: str | None) -> Campaign:
        campaign_id = await compose(services, ADMIN)
        async with services.db.write() as conn:
            await repo.set(conn, campaign_id, NOW, audience=audience, audience_value=value)
            return await repo.get(conn, campaign_id)

    everyone, english, russian, hearings, followers = (
        await draft("all", None),
        await draft("language", "en"),
        await draft("language", "ru"),
        await draft("topic", "hearings"),
        await draft("case", str(case)),
    )
    async with services.db.read() as conn:
        sizes = [await repo.audience_size(conn, c.audience, c.audience_value) for c in (everyone, english)]
        sizes += [await repo.audience_size(conn, c.audience, c.audience_value) for c in (russian, hearings)]
        sizes.append(await repo.audience_size(conn, followers.audience, followers.audience_value))
        assert sizes == [33, 18, 15, 38, 5]
        # Someone in two audiences is one person reached.
        assert await repo.people_reached(conn, [everyone, english, russian]) == 33
        assert await repo.people_reached(conn, [english, followers]) == 20
        assert await repo.everyone(conn) == 40
    # A cancelled campaign counts whom it was delivered to, not its audience.
    async with services.db.write() as conn:
        await repo.set(conn, russian.id, NOW, status="scheduled", send_at=NOW)
    await small_batches(services, 10).run_pass()
    async with services.db.write() as conn:
        await conn.execute(
            text(
                "UPDATE outbox SET status = 'sent' WHERE id IN (SELECT id FROM outbox WHERE ref = :r LIMIT 4)"
            ),
            {"r": russian.ref},
        )
    await services.campaigns.cancel(ADMIN, russian.id)
    async with services.db.read() as conn:
        assert await repo.people_reached(conn, [await repo.get(conn, russian.id)]) == 4


def test_the_threshold_is_the_setting_or_a_tenth_of_everyone_not_below_the_floor() -> None:
    assert approval_threshold(50, 10_000) == 50
    assert approval_threshold(50, 499) == 49
    assert approval_threshold(50, 200) == 20
    # 50 subscribers: one person alone may reach ten of them, not all 50.
    assert approval_threshold(50, 50) == APPROVAL_FLOOR == 10
    assert approval_threshold(50, 0) == 10
    assert approval_threshold(5, 10_000) == 5 and approval_threshold(0, 100) == 0


async def test_per_language_campaigns_add_up_within_the_window(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:30], language="en")
    await seed_subscribers(services, SUBSCRIBERS[30:60], language="ru")
    await seed_subscribers(services, SUBSCRIBERS[60:560], language="ky")  # 560 people: the threshold is 50
    await join(services, COORDINATOR)

    async def send(author: int, language: str, when: datetime | None = None) -> int:
        campaign_id = await compose(services, author)
        await services.campaigns.set_audience(author, campaign_id, "language", language)
        await services.campaigns.send(author, campaign_id, when)
        return campaign_id

    async def status(campaign_id: int) -> str:
        return (await services.campaigns.view(ADMIN, campaign_id)).campaign.status

    english = await send(ADMIN, "en")
    assert await status(english) == "scheduled"
    russian = await send(ADMIN, "ru")
    assert await status(russian) == "awaiting_approval"
    reach = (await services.campaigns.view(SECOND_ADMIN, russian)).reach
    assert reach is not None and (reach.people, reach.window, reach.threshold) == (30, 60, 50)
    assert reach.by_window and not reach.channels
    assert (await services.campaigns.approve(SECOND_ADMIN, russian))[1].window == 60
    # One campaign alone over the threshold, whoever sends it.
    kyrgyz = await send(COORDINATOR, "ky")
    assert await status(kyrgyz) == "awaiting_approval"
    alone = (await services.campaigns.view(ADMIN, kyrgyz)).reach
    assert alone is not None and alone.people == 500 and not alone.by_window
    # A day later the window is empty again; a campaign scheduled within the next one counts as well.
    assert isinstance(services.clock, FakeClock)
    services.clock.advance(timedelta(hours=25).total_seconds())
    later = services.clock.now()
    assert await status(await send(ADMIN, "en")) == "scheduled"
    assert await status(await send(ADMIN, "ru", later + timedelta(hours=23))) == "awaiting_approval"


async def test_four_eyes_modes_and_channels(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:100], language="en")  # the threshold is 10

    async def sent(mode: str, *, channels: bool = False, audience: str = "en") -> str:
        services.campaigns._four_eyes = mode
        campaign_id = await compose(services, ADMIN)
        await services.campaigns.set_audience(ADMIN, campaign_id, "language", audience)
        if channels:
            await services.campaigns.toggle_channels(ADMIN, campaign_id)
        campaign = await services.campaigns.send(ADMIN, campaign_id)
        await services.campaigns.cancel(ADMIN, campaign_id)  # out of the next one's window
        return campaign.status

    assert await sent("off") == "scheduled"
    assert await sent("auto") == "awaiting_approval"
    assert await sent("on") == "awaiting_approval"
    # Channels and groups count as above any threshold: their readers are not counted.
    await seed_subscribers(services, SUBSCRIBERS[100:101], language="uz")
    assert await sent("auto", channels=True, audience="uz") == "awaiting_approval"
    assert await sent("auto", audience="uz") == "scheduled"
    async with services.db.write() as conn:
        await UserRepository().revoke(conn, services.pseudonyms.of_user(SECOND_ADMIN), "admin")
    assert await sent("auto") == "scheduled"  # with one admin, nobody might be there to approve
    assert await sent("on") == "awaiting_approval"


# ----------------------------------------------------------------------------------------- revocation


async def test_withdrawing_an_author_cancels_everything_unsent(services: Services) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:40], language="en")
    await join(services, COORDINATOR)
    coordinator, admin = services.pseudonyms.of_user(COORDINATOR), services.pseudonyms.of_user(ADMIN)
    repo = CampaignRepository()

    async def campaign(author: int, **values: object) -> int:
        campaign_id = await compose(services, author)
        if values:
            async with services.db.write() as conn:
                await repo.set(conn, campaign_id, NOW, **values)
        return campaign_id

    sending = await campaign(COORDINATOR, status="scheduled", send_at=NOW)
    await small_batches(services, 10).run_pass()
    draft = await campaign(COORDINATOR)
    await services.campaigns.expect(COORDINATOR, draft, "text")
    awaiting = await campaign(COORDINATOR, status="awaiting_approval", send_at=NOW)
    scheduled = await campaign(COORDINATOR, status="scheduled", send_at=NOW + timedelta(hours=1))
    edited = await campaign(ADMIN)
    await services.campaigns.toggle_channels(COORDINATOR, edited)
    approved = await campaign(
        ADMIN, status="scheduled", send_at=NOW + timedelta(hours=1), approved_by=coordinator
    )
    done = await campaign(COORDINATOR, status="done", send_at=NOW, deadline=NOW + timedelta(days=3))
    untouched = await campaign(ADMIN, status="scheduled", send_at=NOW + timedelta(hours=1))
    async with services.db.write() as conn:
        await UserRepository().revoke(conn, coordinator, "coordinator")
        cancelled = await services.campaigns.withdraw_author(conn, coordinator, admin)
    assert cancelled == 6
    async with services.db.read() as conn:
        statuses = {
            c: (await repo.get(conn, c)).status for c in (sending, draft, awaiting, scheduled, edited)
        }
        assert set(statuses.values()) == {"cancelled"}
        assert (await repo.get(conn, approved)).status == "cancelled"
        assert (await repo.get(conn, untouched)).status == "scheduled"
        assert (await repo.get(conn, done)).reminders_done
        assert await repo.pending_input(conn, coordinator) is None
        entries = (
            await conn.execute(text("SELECT actor, target FROM audit_log WHERE action = 'campaign.withdraw'"))
        ).all()
    assert sorted(t for _, t in entries) == sorted(
        f"C-{c}" for c in (sending, draft, awaiting, scheduled, edited, approved)
    )
    assert {a for a, _ in entries} == {admin}
    assert Counter(s for _, s, _ in await rows(services)) == {"cancelled": 10}
    # Nothing of theirs goes out later; the untouched campaign does.
    assert isinstance(services.clock, FakeClock)
    services.clock.advance(timedelta(hours=2).total_seconds())
    await small_batches(services, 1000).run_pass()
    assert Counter(s for _, s, _ in await rows(services)) == {"cancelled": 10, "pending": 40}


async def test_the_broadcaster_refuses_a_campaign_whose_author_or_approver_lost_the_role(
    services: Services,
) -> None:
    await seed_subscribers(services, SUBSCRIBERS[:30], language="en")
    await join(services, COORDINATOR)
    coordinator = services.pseudonyms.of_user(COORDINATOR)
    repo = CampaignRepository()
    delivering = await ready_campaign(services, COORDINATOR)
    await services.broadcaster.run_pass()  # all 30 queued, none delivered yet
    authored = await ready_campaign(services, COORDINATOR)
    approved = await ready_campaign(services, ADMIN)
    trusted = await ready_campaign(services, ADMIN)
    async with services.db.write() as conn:
        await repo.set(conn, approved, NOW, approved_by=coordinator)
        # The role goes without anything withdrawing their campaigns (as when an admin leaves the settings).
        await UserRepository().revoke(conn, coordinator, "coordinator")
    await services.broadcaster.run_pass()
    async with services.db.read() as conn:
        statuses = [(await repo.get(conn, c)).status for c in (delivering, authored, approved, trusted)]
        refused = (
            await conn.execute(
                text(
                    "SELECT actor, target, detail FROM audit_log"
                    " WHERE action = 'campaign.withdraw' AND outcome = 'refused' ORDER BY id"
                )
            )
        ).all()
    assert statuses == ["cancelled", "cancelled", "cancelled", "sent"]
    assert [tuple(r) for r in refused] == [
        ("system", f"C-{authored}", "author holds no role; withdrew 0"),
        ("system", f"C-{approved}", "approver holds no role; withdrew 0"),
        ("system", f"C-{delivering}", "author holds no role; withdrew 30"),
    ]
    async with services.db.read() as conn:
        by_ref = (
            await conn.execute(
                text("SELECT ref, status, count(*) FROM outbox WHERE kind = 'campaign' GROUP BY ref, status")
            )
        ).all()
    assert sorted(tuple(r) for r in by_ref) == [
        (f"C-{delivering}", "cancelled", 30),
        (f"C-{trusted}", "pending", 30),
    ]
