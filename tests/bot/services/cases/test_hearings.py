"""Hearings and reminders under a fake clock: every offset exactly once, postponements, downtime, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar
from sqlalchemy import text

from bot.runtime.clock import FakeClock
from bot.security.bindings import payload_binding
from bot.services.access.roles import UNNAMED, NotAllowed
from bot.services.cases.hearings import HearingInputError, HearingService
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from storage.cases import CaseNotFound
from storage.types import from_micros
from tests.conftest import make_settings

COORDINATOR = 900
START = datetime.fromisoformat("2026-03-01T06:00:00+00:00")  # 12:00 in Bishkek
HOUR = timedelta(hours=1)


async def open_all(settings: Settings, clock: FakeClock) -> Services:
    """Open the real services on a fake clock, passes an hour apart."""
    services = await open_services(settings, clock, build_limiter(settings, clock))
    services.hearings.interval = HOUR
    return services


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a coordinator (an admin) on a temporary data dir."""
    return make_settings(tmp_path, admin_ids=frozenset({COORDINATOR}))


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[tuple[Services, FakeClock]]:
    """Services on a fake clock at START."""
    clock = FakeClock(START)
    services = await open_all(settings, clock)
    yield services, clock
    await services.close()


async def case_with_hearing(hearings: HearingService, at: str) -> tuple[int, int]:
    """A public case with one hearing at local time `at`."""
    case_id = await hearings.create_case(COORDINATOR, "Askarov A.", "A journalist on trial", "Art. 278", True)
    hearing = await hearings.add_hearing(
        COORDINATOR, case_id, at, "Pervomaisky court", "Bishkek, Moskovskaya 1", None, None
    )
    return case_id, hearing.id


async def reminders(services: Services) -> list[dict[str, Any]]:
    """Every reminder row: status, due time, text, dedupe key."""
    async with services.db.read() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT uid, payload, status, due_at, dedupe_key FROM outbox"
                    " WHERE kind = 'reminder' ORDER BY id"
                )
            )
        ).all()
    result = []
    for uid, payload, status, due, key in rows:
        params = services.cipher.decrypt_json(payload, binding=payload_binding(uid)) if payload else {}
        result.append(
            {
                "status": status,
                "due": from_micros(due),
                "text": params.get("text", ""),
                "key": key,
                "chat": params.get("chat_id"),
            }
        )
    return result


async def deliver_due(services: Services, clock: FakeClock) -> None:
    """Mark due rows sent, as the delivery worker would have (it does not run in these tests)."""
    async with services.db.write() as conn:
        await conn.execute(
            text("UPDATE outbox SET status = 'sent' WHERE status = 'pending' AND due_at <= :now"),
            {"now": int(clock.now().timestamp() * 1_000_000)},
        )


async def run_passes(services: Services, clock: FakeClock, until: datetime) -> None:
    """Run the reminder pass every hour, as the scheduler would, until `until`."""
    while clock.now() < until:
        await services.hearings.materialise()
        clock.advance(3600)


async def test_every_offset_fires_exactly_once_at_its_time(world: tuple[Services, FakeClock]) -> None:
    services, clock = world
    case_id, _hearing_id = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1001, 1001, case_id)
    await run_passes(services, clock, datetime.fromisoformat("2026-03-10T07:00:00+00:00"))
    due = [r for r in await reminders(services) if r["key"] and r["key"].startswith("reminder:")]
    starts = datetime.fromisoformat("2026-03-10T06:00:00+00:00")
    assert [r["due"] for r in due] == [
        starts - timedelta(days=7),
        starts - timedelta(days=1),
        starts - 2 * HOUR,
    ]
    assert all("late" not in r["text"] for r in due)
    assert all(r["chat"] == 1001 for r in due)


async def test_a_postponed_hearing_is_never_reminded_for_the_old_time(
    world: tuple[Services, FakeClock],
) -> None:
    services, clock = world
    case_id, hearing_id = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1002, 1002, case_id)
    # The 7-day reminder has gone out; then the hearing moves two days later.
    await run_passes(services, clock, datetime.fromisoformat("2026-03-06T06:00:00+00:00"))
    await deliver_due(services, clock)
    await services.hearings.postpone(COORDINATOR, hearing_id, "12.03.2026 12:00")
    await run_passes(services, clock, datetime.fromisoformat("2026-03-12T07:00:00+00:00"))
    rows = await reminders(services)
    notices = [r for r in rows if r["key"].startswith("notice:")]
    assert len([n for n in notices if "new time" in n["text"]]) == 1
    sent_for = [r for r in rows if r["key"].startswith("reminder:")]
    new_start = datetime.fromisoformat("2026-03-12T06:00:00+00:00")
    assert [r["due"] for r in sent_for] == [
        datetime.fromisoformat(
            "2026-03-03T06:00:00+00:00"
        ),  # 7 days before the old time, sent before the move
        new_start - timedelta(days=1),
        new_start - 2 * HOUR,
    ]
    assert all(r["status"] != "cancelled" for r in sent_for)


async def test_a_queued_reminder_dies_with_the_postponement(world: tuple[Services, FakeClock]) -> None:
    services, _clock = world
    services.hearings.interval = timedelta(days=2)  # the next reminder is queued well before its time
    case_id, hearing_id = await case_with_hearing(services.hearings, "03.03.2026 12:00")
    await services.hearings.follow(1003, 1003, case_id)
    await services.hearings.materialise()
    queued = [r for r in await reminders(services) if r["key"].startswith("reminder:")]
    assert [r["status"] for r in queued] == ["pending"]
    await services.hearings.postpone(COORDINATOR, hearing_id, "20.03.2026 12:00")
    assert [r["status"] for r in await reminders(services) if r["key"].startswith("reminder:")] == [
        "cancelled"
    ]


async def test_cancel_stops_reminders_and_tells_followers(world: tuple[Services, FakeClock]) -> None:
    services, clock = world
    case_id, hearing_id = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1004, 1004, case_id)
    await services.hearings.cancel(COORDINATOR, hearing_id)
    await run_passes(services, clock, datetime.fromisoformat("2026-03-10T07:00:00+00:00"))
    rows = await reminders(services)
    assert not [r for r in rows if r["key"].startswith("reminder:")]
    assert len([r for r in rows if "cancelled" in r["text"]]) == 1
    with pytest.raises(HearingInputError):
        await services.hearings.postpone(COORDINATOR, hearing_id, "12.03.2026 12:00")


async def test_a_restart_between_passes_sends_nothing_twice(settings: Settings) -> None:
    clock = FakeClock(START)
    first = await open_all(settings, clock)
    case_id, _ = await case_with_hearing(first.hearings, "10.03.2026 12:00")
    await first.hearings.follow(1005, 1005, case_id)
    await run_passes(first, clock, datetime.fromisoformat("2026-03-05T00:00:00+00:00"))
    await first.close()
    second = await open_all(settings, clock)
    try:
        await run_passes(second, clock, datetime.fromisoformat("2026-03-10T07:00:00+00:00"))
        keys = [r["key"] for r in await reminders(second) if r["key"].startswith("reminder:")]
        assert len(keys) == len(set(keys)) == 3
    finally:
        await second.close()


async def test_downtime_sends_one_late_reminder_only_before_the_hearing(
    world: tuple[Services, FakeClock],
) -> None:
    services, clock = world
    case_id, _ = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1006, 1006, case_id)
    await run_passes(services, clock, datetime.fromisoformat("2026-03-02T00:00:00+00:00"))
    # Down from 2 March until 9 March 14:00 (Bishkek), across the 7-day and 1-day reminders.
    clock.advance((datetime.fromisoformat("2026-03-09T08:00:00+00:00") - clock.now()).total_seconds())
    await run_passes(services, clock, datetime.fromisoformat("2026-03-10T07:00:00+00:00"))
    rows = [r for r in await reminders(services) if r["key"].startswith("reminder:")]
    assert len(rows) == 2
    assert "late" in rows[0]["text"] and ":1440:" in rows[0]["key"]
    assert "late" not in rows[1]["text"] and ":120:" in rows[1]["key"]


async def test_downtime_past_the_hearing_sends_nothing(world: tuple[Services, FakeClock]) -> None:
    services, clock = world
    case_id, _ = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1007, 1007, case_id)
    await run_passes(services, clock, datetime.fromisoformat("2026-03-09T00:00:00+00:00"))
    before = len(await reminders(services))
    clock.advance((datetime.fromisoformat("2026-03-10T08:00:00+00:00") - clock.now()).total_seconds())
    await services.hearings.materialise()
    assert len(await reminders(services)) == before


async def test_many_followers_each_get_each_reminder_once(world: tuple[Services, FakeClock]) -> None:
    services, clock = world
    case_id, _ = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    for person in range(2000, 2060):
        await services.hearings.follow(person, person, case_id)
    await services.hearings.toggle_offset(2000, 120)  # one follower turns the 2-hour reminder off
    await run_passes(services, clock, datetime.fromisoformat("2026-03-10T07:00:00+00:00"))
    rows = [r for r in await reminders(services) if r["key"].startswith("reminder:")]
    assert len(rows) == 60 * 3 - 1
    assert len({r["key"] for r in rows}) == len(rows)


async def test_bad_input_changes_nothing(world: tuple[Services, FakeClock]) -> None:
    services, _clock = world
    hearings = services.hearings
    case_id, _ = await case_with_hearing(hearings, "10.03.2026 12:00")
    for bad, key in (
        ("01.01.2020 10:00", "hearings.past"),
        ("31.02.2026 10:00", "hearings.bad_time"),
        ("10:00", "hearings.bad_time"),
        ("10.03.2026", "hearings.bad_time"),
    ):
        with pytest.raises(HearingInputError) as raised:
            await hearings.add_hearing(COORDINATOR, case_id, bad, "court", "address", None, None)
        assert raised.value.key == key
    with pytest.raises(HearingInputError) as raised:
        await hearings.add_hearing(COORDINATOR, case_id, "10.03.2026 12:00", "court", "address", None, None)
    assert raised.value.key == "hearings.exists"
    with pytest.raises(HearingInputError) as raised:
        await hearings.add_hearing(COORDINATOR, 999, "10.04.2026 12:00", "court", "address", None, None)
    assert raised.value.key == "cases.not_found"
    # A stranger's bad input is refused for the role, before the input says anything.
    with pytest.raises(NotAllowed):
        await hearings.add_hearing(4242, case_id, "yesterday", "court", "address", None, None)
    with pytest.raises(NotAllowed):
        await hearings.create_case(4242, "x", "y", "z", True)
    with pytest.raises(HearingInputError) as raised:
        await hearings.postpone(COORDINATOR, 999, "10.04.2026 12:00")
    assert raised.value.key == "hearings.not_found"
    async with services.db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM hearings"))).scalar() == 1
        refused = (
            await conn.execute(
                text("SELECT action, detail FROM audit_log WHERE outcome = 'refused' ORDER BY id")
            )
        ).all()
        allowed = (
            await conn.execute(
                text("SELECT count(*) FROM audit_log WHERE action = 'hearing.add' AND outcome = 'ok'")
            )
        ).scalar()
    # Every refused attempt is audited once, by the gate; only the one hearing added is audited as done.
    assert [tuple(r) for r in refused] == [
        ("hearing.add", "hearings.past"),
        ("hearing.add", "hearings.bad_time"),
        ("hearing.add", "hearings.bad_time"),
        ("hearing.add", "hearings.bad_time"),
        ("hearing.add", "hearings.exists"),
        ("hearing.add", "cases.not_found"),
        ("hearing.add", "role"),
        ("case.new", "role"),
        ("hearing.change", "hearings.not_found"),
    ]
    assert allowed == 1


async def test_the_calendar_file_round_trips_time_zone_and_updates_in_place(
    world: tuple[Services, FakeClock],
) -> None:
    services, _clock = world
    _case_id, hearing_id = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    first = Calendar.from_ical(await services.hearings.calendar(1008, hearing_id))
    (event,) = first.walk("VEVENT")
    start = event.decoded("dtstart")
    assert start.isoformat() == "2026-03-10T12:00:00+06:00"
    assert str(start.tzinfo) == "Asia/Bishkek"
    assert first.walk("VTIMEZONE")
    await services.hearings.postpone(COORDINATOR, hearing_id, "12.03.2026 15:30")
    (updated,) = Calendar.from_ical(await services.hearings.calendar(1008, hearing_id)).walk("VEVENT")
    assert str(updated["uid"]) == str(event["uid"])
    assert updated.decoded("sequence") == event.decoded("sequence") + 1
    assert updated.decoded("dtstart").isoformat() == "2026-03-12T15:30:00+06:00"


async def test_a_move_re_queues_the_reminder_the_last_pass_had_queued(
    world: tuple[Services, FakeClock],
) -> None:
    services, _clock = world
    services.hearings.interval = timedelta(days=2)
    case_id, hearing_id = await case_with_hearing(services.hearings, "03.03.2026 12:00")
    await services.hearings.follow(1101, 1101, case_id)
    await services.hearings.materialise()  # queues the 1-day reminder (2 March, 06:00 UTC) ahead
    await services.hearings.move(COORDINATOR, hearing_id, "Sverdlovsky court", "Bishkek, Isanova 3")
    rows = [r for r in await reminders(services) if r["key"].startswith("reminder:")]
    assert [r["status"] for r in rows] == ["cancelled", "pending"]
    assert "Sverdlovsky" in rows[1]["text"]
    # The same command again (a retried update) changes and tells nothing more.
    await services.hearings.move(COORDINATOR, hearing_id, "Sverdlovsky court", "Bishkek, Isanova 3")
    notices = [r for r in await reminders(services) if r["key"].startswith("notice:")]
    assert len([n for n in notices if "new place" in n["text"]]) == 1


async def test_unfollowing_withdraws_what_is_queued(world: tuple[Services, FakeClock]) -> None:
    services, _clock = world
    services.hearings.interval = timedelta(days=2)
    case_id, _ = await case_with_hearing(services.hearings, "03.03.2026 12:00")
    await services.hearings.follow(1102, 1102, case_id)
    await services.hearings.materialise()
    await services.hearings.unfollow(1102, case_id)
    assert {r["status"] for r in await reminders(services)} == {"cancelled"}


async def test_a_private_case_calendar_is_only_for_followers_and_coordinators(
    world: tuple[Services, FakeClock],
) -> None:
    services, _ = world
    case_id = await services.hearings.create_case(COORDINATOR, "Closed trial", "Not public", "n/a", False)
    hearing = await services.hearings.add_hearing(
        COORDINATOR, case_id, "10.03.2026 12:00", "Court", "Address", None, None
    )
    with pytest.raises(CaseNotFound):
        await services.hearings.calendar(4343, hearing.id)
    assert b"BEGIN:VEVENT" in await services.hearings.calendar(COORDINATOR, hearing.id)
    async with services.db.read() as conn:
        actors = await conn.execute(
            text("SELECT actor FROM audit_log WHERE action = 'hearing.calendar' AND outcome = 'refused'")
        )
        # The log outlives /forget: it must not tie someone without a role to a case they asked about.
        assert actors.scalars().all() == [UNNAMED]


async def test_a_clock_that_ran_ahead_does_not_silence_reminders(world: tuple[Services, FakeClock]) -> None:
    services, clock = world
    case_id, _ = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1103, 1103, case_id)
    clock.advance(3 * 86400)
    await services.hearings.materialise()  # the watermark now sits three days ahead
    clock._now -= timedelta(days=3)
    await run_passes(services, clock, datetime.fromisoformat("2026-03-10T07:00:00+00:00"))
    keys = [r["key"] for r in await reminders(services) if r["key"].startswith("reminder:")]
    assert any(":120:" in key for key in keys) and any(":1440:" in key for key in keys)


async def test_hearing_times_are_shown_in_the_followers_own_zone(world: tuple[Services, FakeClock]) -> None:
    services, _clock = world
    case_id, hearing_id = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1201, 1201, case_id)
    await services.hearings.follow(1202, 1202, case_id)
    await services.users.choose_timezone(1202, "Asia/Tashkent")
    await services.hearings.postpone(COORDINATOR, hearing_id, "11.03.2026 12:00")
    texts = {r["chat"]: r["text"] for r in await reminders(services) if "new time" in r["text"]}
    assert "11.03.2026 12:00 (Asia/Bishkek)" in texts[1201]
    assert "11.03.2026 11:00 (Asia/Tashkent)" in texts[1202]


async def test_outcomes_wait_for_the_hearing_and_pledges_are_purged_after(
    world: tuple[Services, FakeClock],
) -> None:
    services, clock = world
    case_id, hearing_id = await case_with_hearing(services.hearings, "02.03.2026 12:00")
    await services.hearings.follow(1301, 1301, case_id)
    await services.hearings.attend(1301, hearing_id, 0)
    with pytest.raises(HearingInputError) as raised:
        await services.hearings.record_outcome(COORDINATOR, hearing_id, "Adjourned to 20 March")
    assert raised.value.key == "hearings.not_yet"
    clock.advance(2 * 86400)
    await services.hearings.record_outcome(COORDINATOR, hearing_id, "Adjourned to 20 March")
    assert await services.hearings.purge() == 0  # kept for a day after the hearing
    clock.advance(86400)
    assert await services.hearings.purge() == 1


async def test_the_followed_calendar_keeps_cancelled_hearings_as_cancelled(
    world: tuple[Services, FakeClock],
) -> None:
    services, _ = world
    case_id, hearing_id = await case_with_hearing(services.hearings, "10.03.2026 12:00")
    await services.hearings.follow(1302, 1302, case_id)
    await services.hearings.cancel(COORDINATOR, hearing_id)
    (event,) = Calendar.from_ical(await services.hearings.calendar(1302, None)).walk("VEVENT")
    assert str(event["status"]) == "CANCELLED"


async def test_attendance_is_only_for_public_or_followed_cases_and_tells_nothing(
    world: tuple[Services, FakeClock],
) -> None:
    services, _ = world
    hearings = services.hearings
    case_id = await hearings.create_case(COORDINATOR, "Closed trial", "Not public", "n/a", False)
    hidden = await hearings.add_hearing(
        COORDINATOR, case_id, "10.03.2026 12:00", "Court", "Address", None, None
    )
    keys = []
    for hearing_id in (hidden.id, 999):
        with pytest.raises(HearingInputError) as raised:
            await hearings.attend(1401, hearing_id, 0)
        keys.append(raised.value.key)
    # A hidden hearing and a missing one get the same answer.
    assert keys == ["attend.stale", "attend.stale"]
    async with services.db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM attendance"))).scalar() == 0
        refused = (
            await conn.execute(
                text("SELECT action, target FROM audit_log WHERE outcome = 'refused' ORDER BY id")
            )
        ).all()
    assert [tuple(r) for r in refused] == [("hearing.attend", f"#{hidden.id}"), ("hearing.attend", "#999")]
    # A follower of the case (it was public when they followed) may still say they will attend.
    public_id, public_hearing = await case_with_hearing(hearings, "11.03.2026 12:00")
    await hearings.follow(1402, 1402, public_id)
    await hearings.edit_case(COORDINATOR, public_id, "Askarov A.", "Now closed", "Art. 278", False)
    await hearings.attend(1402, public_hearing, 0)
