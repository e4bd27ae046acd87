"""Alerts on the worst day, on real services and a real SQLite file with a fake clock: digests when the
group's budget cannot take a card per report, SOS first, coalesced SOS follow-ups, duty and escalation,
live copies of a card, and leases taken back at restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.runtime.clock import FakeClock
from bot.runtime.delivery import Failure, Receipt
from bot.runtime.outbox import PRIORITY_SOS
from bot.security.bindings import payload_binding
from bot.services.access.roles import NotAllowed
from bot.services.reports.body import alert_input
from bot.services.triage.alerts import CARD_KIND, DIGEST_KIND, EDIT_KIND
from bot.services.triage.planner import DIGEST_SIZE
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from messages import LANGUAGES, catalogs
from storage.outbox import ClaimedRow, OutboxRepository
from tests.conftest import make_settings
from tests.workspace_seed import Seed, seed_reports

ADMIN = 5001
AIDA, BEK, STRANGER = 6001, 6002, 6003
REPORTERS = 7000
COORDINATORS = -100777
NOW = datetime.fromisoformat("2026-11-20T06:00:00+00:00")
KICKED = Failure(CARD_KIND, None, "key", "403: Forbidden: bot was kicked from the group chat", held=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Telegram's real group limit (20 a minute), an admin and a coordinators' chat."""
    return make_settings(
        tmp_path,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=COORDINATORS,
        rate_group_per_min=20.0,
        sos_per_minute=100,
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """The real services on a fake clock."""
    clock = FakeClock(NOW)
    opened = await open_services(settings, clock, build_limiter(settings, clock))
    yield opened
    await opened.close()


def clock_of(services: Services) -> FakeClock:
    """The fake clock the services run on."""
    assert isinstance(services.clock, FakeClock)
    return services.clock


async def join(services: Services, user_id: int) -> None:
    """Make a coordinator through an admin's invite."""
    await services.users.seen(user_id, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(user_id, invite.token)


async def queue_reports(services: Services, count: int) -> list[str]:
    """Create reports and queue their alerts, as submitting them would."""
    codes = await seed_reports(services.db, services.cipher, [Seed()] * count, services.clock.now())
    async with services.db.write() as conn:
        for code in codes:
            report = await services.triage._reports.by_code(conn, code)
            await services.alerts.queue(conn, alert_input(services.cipher, report, []))
    return codes


async def send_sos(services: Services, user_id: int) -> str:
    """Press SOS and confirm it, as a person would."""
    await services.users.seen(user_id, "en")
    draft = await services.reports.sos_begin(user_id)
    return (await services.reports.sos_send(user_id, user_id, draft.nonce, None)).code


async def rows(services: Services, where: str = "1=1") -> list[dict[str, Any]]:
    """Return outbox rows (with their decrypted parameters) matching a condition, oldest first."""
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


def fill_group_window(services: Services, sends: int) -> None:
    """Count sends into the coordinators' chat as if they had just left."""
    key = services.pseudonyms.of_chat(COORDINATORS)
    now = services.limiter.now()
    for index in range(sends):
        services.limiter.record(key, "group", now - 1.0 + index * 0.01)


# ---------------------------------------------------------------------------------------------- digests


async def test_a_few_reports_keep_a_card_each(services: Services) -> None:
    await queue_reports(services, 3)
    assert await services.planner.plan() == 0
    assert len(await rows(services, f"kind = '{CARD_KIND}' AND status = 'pending'")) == 3


async def test_more_reports_than_the_window_takes_are_folded_into_one_digest(services: Services) -> None:
    codes = await queue_reports(services, 30)
    assert await services.planner.plan() == 0, "a moment for more to join"
    clock_of(services).advance(2.5)
    assert await services.planner.plan() == 1
    digest = (await rows(services, f"kind = '{DIGEST_KIND}'"))[0]
    params = digest["params"]
    assert isinstance(params, dict)
    assert all(code in params["text"] for code in codes)
    assert params["chat_id"] == COORDINATORS
    buttons = [b for row in params["reply_markup"]["inline_keyboard"] for b in row]
    assert [b["callback_data"] for b in buttons] == [f"o:{code}" for code in codes]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)
    assert len(params["text"]) <= 4096
    # The cards it replaces are out of the queue, with a reason, and nothing else was lost.
    folded = await rows(services, f"kind = '{CARD_KIND}'")
    assert {row["status"] for row in folded} == {"cancelled"}
    assert {row["last_error"] for row in folded} == {"shown in a digest"}


async def test_sos_come_first_in_a_digest_and_keep_their_own_card(services: Services) -> None:
    await queue_reports(services, 25)
    sos = [await send_sos(services, REPORTERS + i) for i in range(3)]
    clock_of(services).advance(2.0)  # the SOS found no slot for a moment
    fill_group_window(services, 16)  # the slots SOS cards may use are spent
    assert await services.planner.plan() == 1
    text_ = (await rows(services, f"kind = '{DIGEST_KIND}'"))[0]["params"]["text"]
    lines = text_.splitlines()
    listed = [line for line in lines if "R-" in line]
    assert all(code in listed[i] for i, code in enumerate(sos)), "SOS are listed first"
    # Their own cards still wait to go out individually, at the top priority.
    own = await rows(services, f"kind = '{CARD_KIND}' AND priority = {PRIORITY_SOS} AND status = 'pending'")
    assert len(own) == 3
    # Listed once: the next pass does not list them again.
    clock_of(services).advance(1.0)
    assert await services.planner.plan() == 0


async def test_sos_beyond_their_tier_are_listed_in_the_digest_that_goes_now(services: Services) -> None:
    await queue_reports(services, 25)
    first = await send_sos(services, REPORTERS)
    clock_of(services).advance(1.0)  # the first SOS found no slot for its grace
    later = [await send_sos(services, REPORTERS + 1 + i) for i in range(4)]
    fill_group_window(services, 12)  # two slots left in the SOS tier (20 - 6 kept for digests)
    assert await services.planner.plan() == 1
    text_ = (await rows(services, f"kind = '{DIGEST_KIND}'"))[0]["params"]["text"]
    # The two oldest take the tier's slots (the first is listed too: its grace is over); the three beyond
    # them would find no slot, so they are listed now rather than in a digest seconds later.
    assert [code in text_ for code in [first, *later]] == [True, False, True, True, True]
    own = await rows(services, f"kind = '{CARD_KIND}' AND priority = {PRIORITY_SOS} AND status = 'pending'")
    assert len(own) == 5, "every SOS keeps its own card"


async def test_sos_a_worker_holds_for_a_spent_tier_are_listed_too(services: Services) -> None:
    await queue_reports(services, 25)
    sos = [await send_sos(services, REPORTERS + i) for i in range(3)]
    async with services.db.write() as conn:  # the worker claimed their cards and waits for a slot
        now = services.clock.now()
        held = await OutboxRepository().claim(conn, "worker", now, now + timedelta(minutes=1), 3)
    assert [(row.kind, row.priority) for row in held] == [(CARD_KIND, PRIORITY_SOS)] * 3
    fill_group_window(services, 14)  # the SOS tier is spent: none of them finds a slot in it
    clock_of(services).advance(2.5)
    assert await services.planner.plan() == 1
    text_ = (await rows(services, f"kind = '{DIGEST_KIND}'"))[0]["params"]["text"]
    assert all(code in text_ for code in sos)
    assert len(await rows(services, "status = 'sending'")) == 3, "their cards stay with the worker"


async def test_the_last_slots_are_kept_for_sos_while_reports_can_wait(services: Services) -> None:
    fill_group_window(services, 19)
    await queue_reports(services, 3)
    assert await services.planner.plan() == 0  # one slot left: kept for an SOS that may come
    clock_of(services).advance(25.0)
    # The window frees within the horizon: the cards will go one by one, in time; nothing is dropped.
    assert await services.planner.plan() == 0
    assert len(await rows(services, f"kind = '{CARD_KIND}' AND status = 'pending'")) == 3


async def test_no_digest_fits_a_full_window(services: Services) -> None:
    fill_group_window(services, 20)
    await queue_reports(services, 40)
    assert await services.planner.plan() == 0
    assert len(await rows(services, f"kind = '{CARD_KIND}' AND status = 'pending'")) == 40


async def test_huge_backlogs_fill_several_digests_within_the_free_slots(services: Services) -> None:
    fill_group_window(services, 17)
    await queue_reports(services, 2 * DIGEST_SIZE + 30)
    assert await services.planner.plan() == 1, "two of the three slots are kept for SOS"
    clock_of(services).advance(31.0)
    assert await services.planner.plan() == 2
    digests = await rows(services, f"kind = '{DIGEST_KIND}'")
    assert len(digests) == 3
    listed = sum(str(d["params"]["text"]).count("R-") for d in digests)
    assert listed == 2 * DIGEST_SIZE + 30


def claimed(services: Services, kind: str, priority: int, chat: int = COORDINATORS) -> ClaimedRow:
    """A claimed row as the worker would see it."""
    key = services.pseudonyms.of_chat(chat)
    return ClaimedRow(1, "u", kind, "sendMessage", b"", key, "group", None, priority, 1, 0)


async def test_digests_fit_telegram_with_the_longest_names_in_every_language(
    services: Services,
) -> None:
    texts = catalogs()

    def longest(prefix: str, names: list[str]) -> str:
        return max(names, key=lambda n: max(len(texts.plain(lang, f"{prefix}.{n}")) for lang in LANGUAGES))

    category = longest("category", ["detention", "summons", "search", "violence", "threats", "journalist"])
    region = longest("region", ["bishkek", "osh_city", "issyk_kul", "jalal_abad", "osh_region", "elsewhere"])
    seeds = [Seed(category=category, region=region)] * (2 * DIGEST_SIZE + 5)
    await seed_reports(services.db, services.cipher, seeds, services.clock.now())
    async with services.db.read() as conn:
        codes = [r[0] for r in await conn.execute(text("SELECT code FROM reports"))]
        reports = await services.triage._reports.by_codes(conn, codes)
    for language in LANGUAGES:
        core = services.planner._core
        services.planner._core = replace(core, settings=replace(core.settings, default_language=language))
        parts = services.planner._parts(reports)
        assert sum(len(part) for part in parts) == len(reports), "nobody is left out"
        for part in parts:
            digest = services.planner._digest(COORDINATORS, part, waiting=len(reports))
            assert len(digest.params["text"]) <= 4096, language
            assert sum(len(row) for row in digest.params["reply_markup"]["inline_keyboard"]) <= 100


async def test_slots_are_tiered_report_cards_leave_room_for_sos_and_digests(services: Services) -> None:
    await services.alerts.has_destination()  # reads the chat
    settings = services.settings
    # A calm minute: a report's messages and edits leave only a little room for an SOS.
    calm = services.alerts.headroom(claimed(services, EDIT_KIND, 60))
    assert calm == settings.alert_sos_reserve // 2
    await queue_reports(services, 3)  # a burst begins
    both = settings.alert_sos_reserve + settings.alert_digest_reserve
    assert services.alerts.headroom(claimed(services, CARD_KIND, 80)) == both
    assert services.alerts.headroom(claimed(services, EDIT_KIND, 60)) == both
    assert (
        services.alerts.headroom(claimed(services, CARD_KIND, PRIORITY_SOS)) == settings.alert_digest_reserve
    )
    assert services.alerts.headroom(claimed(services, DIGEST_KIND, 95)) == 0
    # Other chats (a campaign's channel) keep their whole window.
    assert services.alerts.headroom(claimed(services, "campaign", 0, chat=-100999)) == 0


# ------------------------------------------------------------------------------------ SOS follow-ups


async def test_a_follow_up_flood_is_one_coalesced_edit_behind_any_first_sos(services: Services) -> None:
    code = await send_sos(services, REPORTERS)
    async with services.db.write() as conn:
        await services.triage.card_sent(conn, [Receipt(CARD_KIND, code, COORDINATORS, 10)])
    for index in range(39):
        screen = await services.reports.sos_followup(REPORTERS, 100 + index, text=f"line {index}")
        assert screen is not None and screen.error is None
    await services.reports.sos_followup(REPORTERS, 200, location=(42.87, 74.59))
    other = await send_sos(services, REPORTERS + 1)
    edits = await rows(services, f"kind = '{EDIT_KIND}' AND status = 'pending'")
    assert len(edits) == 1, "only the latest state of the card is queued"
    edit = edits[0]
    assert "line 38" in edit["params"]["text"] and "42.87" in edit["params"]["text"]
    # Another person's first SOS goes ahead of the follow-ups.
    first = await rows(services, f"kind = '{CARD_KIND}' AND ref = '{other}'")
    assert first[0]["priority"] > edit["priority"]
    assert not await rows(services, f"kind = 'alert' AND ref = '{code}'"), "no message per follow-up"


# ---------------------------------------------------------------------------------- duty, escalation


async def test_duty_is_for_coordinators_audited_and_gets_every_sos(services: Services) -> None:
    await join(services, AIDA)
    with pytest.raises(NotAllowed):
        await services.duty.set(STRANGER, True)
    state = await services.duty.set(AIDA, True)
    assert state.on_duty and state.on_duty_count == 1
    code = await send_sos(services, REPORTERS)
    private = await rows(services, f"kind = '{CARD_KIND}' AND ref = '{code}' AND chat_kind = 'private'")
    assert [row["params"]["chat_id"] for row in private] == [AIDA]
    members = await services.team.members(ADMIN)
    assert [m.on_duty for m in members if "coordinator" in m.roles] == [True]
    await services.duty.set(AIDA, False)
    second = await send_sos(services, REPORTERS + 1)
    assert not await rows(services, f"ref = '{second}' AND chat_kind = 'private'")
    async with services.db.read() as conn:
        query = text("SELECT action FROM audit_log WHERE outcome = 'ok'")
        actions = [r[0] for r in await conn.execute(query)]
    assert actions.count("team.duty_on") == 1 and actions.count("team.duty_off") == 1


async def test_an_unanswered_sos_is_escalated_at_a_growing_capped_interval(services: Services) -> None:
    clock = clock_of(services)
    await join(services, AIDA)
    await services.duty.set(AIDA, True)
    code = await send_sos(services, REPORTERS)
    assert await services.duty.escalate() == 0
    clock.advance(5 * 60)
    assert await services.duty.escalate() == 1
    private = await rows(services, f"kind = '{CARD_KIND}' AND ref = '{code}' AND chat_kind = 'private'")
    to = sorted(row["params"]["chat_id"] for row in private)
    assert to == [ADMIN, AIDA, AIDA]  # the on-duty copy at once, then the escalation to both
    assert "has waited 5 min" in private[-1]["params"]["text"]
    clock.advance(5 * 60)
    assert await services.duty.escalate() == 0, "the second comes 10 minutes after the first"
    clock.advance(5 * 60)
    assert await services.duty.escalate() == 1
    for _ in range(6):
        clock.advance(30 * 60)
        assert await services.duty.escalate() == 1, "capped at 30 minutes"
    await services.triage.press(AIDA, code, "ack")
    clock.advance(60 * 60)
    assert await services.duty.escalate() == 0


async def test_revoking_a_coordinator_takes_them_off_duty_and_stops_editing_their_copies(
    services: Services,
) -> None:
    await join(services, AIDA)
    await services.team.set_name(AIDA, "Aida")
    await services.duty.set(AIDA, True)
    code = await send_sos(services, REPORTERS)
    async with services.db.write() as conn:
        await services.triage.card_sent(conn, [Receipt(CARD_KIND, code, AIDA, 5)])
    await services.team.revoke(ADMIN, "Aida")
    await services.triage.press(ADMIN, code, "take")
    edits = await rows(services, f"kind = '{EDIT_KIND}' AND status = 'pending'")
    assert AIDA not in [row["params"]["chat_id"] for row in edits]
    third = await send_sos(services, REPORTERS + 1)
    assert not await rows(services, f"ref = '{third}' AND chat_kind = 'private'")


# ---------------------------------------------------------------------------------------------- live copies


async def test_every_copy_of_a_card_is_edited_and_an_unknown_pressed_copy_is_adopted(
    services: Services,
) -> None:
    await join(services, AIDA)
    (code,) = await queue_reports(services, 1)
    async with services.db.write() as conn:
        # The card went out twice (a resend after a crash recorded both).
        await services.triage.card_sent(conn, [Receipt(CARD_KIND, code, COORDINATORS, 10)])
        await services.triage.card_sent(conn, [Receipt(CARD_KIND, code, COORDINATORS, 11)])
    # A third copy whose receipt was lost is pressed: it is live from now on.
    await services.triage.press(AIDA, code, "take", chat_id=COORDINATORS, message_id=9)
    edits = await rows(services, f"kind = '{EDIT_KIND}' AND status = 'pending'")
    assert sorted(row["params"]["message_id"] for row in edits) == [9, 10, 11]
    # A press in some other chat adopts nothing.
    await services.triage.press(AIDA, code, "verify", chat_id=-100555, message_id=3)
    edits = await rows(services, f"kind = '{EDIT_KIND}' AND status = 'pending'")
    assert sorted(row["params"]["message_id"] for row in edits) == [9, 10, 11]


async def test_a_resent_card_says_it_may_be_a_repeat(services: Services) -> None:
    marked = services.alerts.mark_repeat({"chat_id": 1, "text": "card"})
    assert marked["text"].startswith("card") and "may repeat" in marked["text"]
    assert services.alerts.mark_repeat(marked) == marked, "marked once"


async def test_opening_a_card_from_a_digest_is_for_coordinators_and_sends_it_privately(
    services: Services,
) -> None:
    await join(services, AIDA)
    (code,) = await queue_reports(services, 1)
    with pytest.raises(NotAllowed):
        await services.triage.open_card(STRANGER, code)
    assert await services.triage.open_card(AIDA, code) == code
    private = await rows(services, f"ref = '{code}' AND chat_kind = 'private'")
    assert private and private[0]["kind"] == CARD_KIND and private[0]["params"]["chat_id"] == AIDA
    assert "Two officers detained" in private[0]["params"]["text"]
    async with services.db.read() as conn:
        audited = [tuple(r) for r in await conn.execute(text("SELECT action, outcome FROM audit_log"))]
    assert ("alerts.open", "refused") in audited and ("alerts.open", "ok") in audited


# ---------------------------------------------------------------------------------------------- held


async def test_admins_see_how_many_alerts_wait_and_why(services: Services) -> None:
    await queue_reports(services, 2)
    kicked = replace(KICKED, chat_key=services.pseudonyms.of_chat(COORDINATORS))
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE outbox SET status = 'held', last_error = '403: kicked'"))
        await services.watch.failed(conn, [kicked])
    held = await services.watch.held()
    assert held.count == 2 and held.reason == "removed"
    notices = await rows(services, "kind = 'admin_notice'")
    assert [n["params"]["chat_id"] for n in notices] == [ADMIN]
    assert "2</b> alert(s) are waiting" in notices[0]["params"]["text"]
    # Told once per incident.
    async with services.db.write() as conn:
        await services.watch.failed(conn, [kicked])
    assert len(await rows(services, "kind = 'admin_notice'")) == 1
    # The incident is remembered across restarts.
    async with services.db.read() as conn:
        stored = (
            await conn.execute(text("SELECT value FROM bot_state WHERE key = 'alerts_incident'"))
        ).scalar()
    assert json.loads(str(stored))["reason"] == "removed"


async def test_leases_of_this_instances_previous_run_are_taken_back_at_once(services: Services) -> None:
    await queue_reports(services, 2)
    repo, now = services.outbox_repo, services.clock.now()
    instance = services.delivery.instance
    async with services.db.write() as conn:
        mine = await repo.claim(conn, f"{instance}:dead", now, now + timedelta(seconds=60), 1)
        theirs = await repo.claim(conn, "other:live", now, now + timedelta(seconds=60), 1)
        assert await repo.reclaim_instance(conn, instance, exclude_owner=services.delivery.owner) == 1
    after = {row["id"]: row for row in await rows(services)}
    assert after[mine[0].id]["status"] == "pending"
    assert after[mine[0].id]["unknown_outcomes"] == 1, "it may have gone out: a resend is marked"
    assert after[theirs[0].id]["status"] == "sending", "another instance's live lease is never taken"


async def test_a_refusal_by_a_chat_alerts_left_sends_the_alert_on_without_alarm(services: Services) -> None:
    await queue_reports(services, 1)
    old = Failure(CARD_KIND, None, services.pseudonyms.of_chat(-100999), "403: Forbidden", held=True)
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE outbox SET status = 'held'"))
        await services.watch.failed(conn, [old])
    assert not await rows(services, "kind = 'admin_notice'")
    assert {row["status"] for row in await rows(services, "kind <> 'admin_notice'")} == {"pending"}


async def test_one_refused_message_keeps_its_incident_until_it_goes_through(services: Services) -> None:
    codes = await queue_reports(services, 2)
    key = services.pseudonyms.of_chat(COORDINATORS)
    photo = Failure("alert", codes[0], key, "400: Bad Request: not allowed to send photos", held=True)
    async with services.db.write() as conn:
        hold = text("UPDATE outbox SET status = 'held' WHERE kind = 'alert' AND ref = :code")
        await conn.execute(hold, {"code": codes[0]})
        await services.watch.failed(conn, [photo])
        # Other alerts keep reaching the chat: that says nothing about the refused one.
        await services.watch.delivered(conn, [Receipt(CARD_KIND, codes[1], COORDINATORS, 7)])
    held = await services.watch.held()
    assert held.count == 1 and held.reason == "refused"
    notices = await rows(services, "kind = 'admin_notice'")
    assert len(notices) == 1, "told once, and no false 'reach again'"
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE outbox SET status = 'sent' WHERE status = 'held'"))
        await services.watch.delivered(conn, [Receipt("alert", codes[0], COORDINATORS, 8)])
    assert (await services.watch.held()).reason is None


async def test_reports_that_would_wait_past_the_minute_for_their_cards_are_digested(
    services: Services,
) -> None:
    fill_group_window(services, 18)  # the window frees only a minute after these sends
    await queue_reports(services, 8)  # 16 messages with their locations: fewer than the window frees
    assert await services.planner.plan() == 0  # two slots left: kept for SOS while the reports can wait
    clock_of(services).advance(34.0)
    # Their cards would go one by one only after the window frees, past the minute: digest them now.
    assert await services.planner.plan() == 1
    assert not await rows(services, f"kind = '{CARD_KIND}' AND status = 'pending'")
