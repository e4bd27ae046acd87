"""Guided command flows as a service, on a fake clock: the past refused at its step, expiry, the drafts'
purge and /forget handling a flow's row, and a Save that runs once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.domain.callbacks import DatePress, FlowPress
from bot.domain.commands import CommandSpec
from bot.runtime.clock import FakeClock
from bot.services.cases.flows import FLOW_TTL, FlowEnded
from bot.wiring import Services, build_limiter, open_services
from tests.conftest import make_settings

COORDINATOR = 910
START = datetime.fromisoformat("2026-03-01T06:00:00+00:00")  # 12:00 in Bishkek


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Services, FakeClock]]:
    clock = FakeClock(START)
    settings = make_settings(tmp_path, admin_ids=frozenset({COORDINATOR}))
    services = await open_services(settings, clock, build_limiter(settings, clock))
    yield services, clock
    await services.close()


async def _flows(services: Services) -> int:
    async with services.db.read() as conn:
        return int(
            (await conn.execute(text("SELECT count(*) FROM drafts WHERE kind = 'flow'"))).scalar() or 0
        )


async def test_a_past_time_is_refused_at_its_step(world: tuple[Services, FakeClock]) -> None:
    services, _ = world
    case_id = await services.hearings.create_case(COORDINATOR, "A", "B", "C", True)
    screen = await services.flows.begin(COORDINATOR, COORDINATOR, "hearing_add")
    nonce = screen.flow.nonce
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 0, "pick", str(case_id)))
    # Today is selectable, but 08:00 today (Bishkek) is already past at noon.
    screen = await services.flows.press(COORDINATOR, DatePress(nonce, 1, "day", 20260301))
    screen = await services.flows.press(COORDINATOR, DatePress(nonce, 1, "hour", 8))
    screen = await services.flows.press(COORDINATOR, DatePress(nonce, 1, "minute", 0))
    assert screen.error == "hearings.past" and screen.flow.step == 1
    # Yesterday is no button at all.
    with pytest.raises(FlowEnded):
        await services.flows.press(COORDINATOR, DatePress(nonce, 1, "day", 20260228))
    screen = await services.flows.input_text(COORDINATOR, "01.03.2026 18:00", 1) or screen
    assert screen.error is None and screen.flow.step == 2


async def test_a_save_runs_the_command_once_and_ends_the_flow(world: tuple[Services, FakeClock]) -> None:
    services, _ = world
    screen = await services.flows.begin(COORDINATOR, COORDINATOR, "case_new")
    nonce = screen.flow.nonce
    for message_id, typed in enumerate(("Aida K.", "Line one\nline two", "Art. 1"), start=1):
        await services.flows.input_text(COORDINATOR, typed, message_id)
    # The same message again (a retried update) is not taken twice.
    again = await services.flows.input_text(COORDINATOR, "Art. 1", 3)
    assert again is not None and again.flow.step == 3
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 3, "pick", "private"))
    assert screen.flow.at_summary
    ran: list[dict[str, object]] = []

    async def execute(spec: CommandSpec, values: dict[str, object]) -> int:
        ran.append(values)
        return await services.hearings.create_case(
            COORDINATOR, str(values["names"]), str(values["description"]), str(values["charges"]), False
        )

    case_id = await services.flows.save(COORDINATOR, nonce, 4, execute)
    assert ran == [
        {
            "names": "Aida K.",
            "description": "Line one\nline two",
            "charges": "Art. 1",
            "visibility": "private",
        }
    ]
    with pytest.raises(FlowEnded):
        await services.flows.save(COORDINATOR, nonce, 4, execute)
    assert len(ran) == 1 and await _flows(services) == 0
    async with services.db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM cases"))).scalar() == case_id == 1


async def test_a_save_whose_author_loses_the_role_just_after_still_reports_it_saved(
    world: tuple[Services, FakeClock],
) -> None:
    services, _ = world
    other = COORDINATOR + 1
    invite = await services.team.invite(COORDINATOR)
    await services.team.join(other, invite.token)
    await services.team.set_name(other, "Nur")
    screen = await services.flows.begin(other, other, "case_new")
    nonce = screen.flow.nonce
    for message_id, typed in enumerate(("Aida K.", "Detained", "Art. 1"), start=1):
        await services.flows.input_text(other, typed, message_id)
    await services.flows.press(other, FlowPress(nonce, 3, "pick", "public"))

    async def execute(spec: CommandSpec, values: dict[str, object]) -> int:
        case_id = await services.hearings.create_case(other, "Aida K.", "Detained", "Art. 1", True)
        await services.team.revoke(COORDINATOR, "Nur")  # a moment after the case was made
        return case_id

    # The case was made: the person is told so, and the flow is gone with the role.
    assert await services.flows.save(other, nonce, 4, execute) == 1
    assert await _flows(services) == 0


async def test_a_hearing_is_picked_from_the_soonest_of_open_cases_recent_past_included(
    world: tuple[Services, FakeClock],
) -> None:
    services, clock = world
    hearings = services.hearings
    case_id = await hearings.create_case(COORDINATOR, "Aida K.", "Detained", "Art. 1", True)
    held = await hearings.add_hearing(
        COORDINATOR, case_id, "02.03.2026 10:00", "Court", "Manas 1", None, None
    )
    later = await hearings.add_hearing(
        COORDINATOR, case_id, "25.03.2026 10:00", "Court", "Manas 1", None, None
    )
    closed = await hearings.create_case(COORDINATOR, "Closed", "Over", "Art. 2", True)
    await hearings.add_hearing(COORDINATOR, closed, "10.03.2026 10:00", "Court", "Chui 2", None, None)
    await hearings.close_case(COORDINATOR, closed)
    old = await hearings.add_hearing(COORDINATOR, case_id, "12.03.2026 10:00", "Court", "Lenin 1", None, None)
    clock.advance(20 * 86400)  # 21.03: the hearing of 02.03 is over two weeks old, that of 12.03 is not
    screen = await services.flows.begin(COORDINATOR, COORDINATOR, "hearing_outcome")
    # The one that may wait for its outcome, then the later one; not the closed case's, not the oldest.
    assert [h.id for h in screen.hearings] == [old.id, later.id] and held.id not in {
        h.id for h in screen.hearings
    }
    screen = await services.flows.press(COORDINATOR, FlowPress(screen.flow.nonce, 0, "pick", str(old.id)))
    assert screen.flow.step == 1 and screen.flow.values["hearing"] == str(old.id)


async def test_case_edit_starts_from_the_picked_case_and_keep_keeps_a_field(
    world: tuple[Services, FakeClock],
) -> None:
    services, _ = world
    first = await services.hearings.create_case(COORDINATOR, "Aida K.", "Held\nsince May", "Art. 1", True)
    second = await services.hearings.create_case(COORDINATOR, "Bek T.", "Fined", "Art. 2", False)
    screen = await services.flows.begin(COORDINATOR, COORDINATOR, "case_edit")
    nonce = screen.flow.nonce
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 0, "pick", str(first)))
    assert screen.flow.values["names"] == "Aida K." and screen.flow.values["visibility"] == "public"
    # Back, and another case: its values, not the first one's.
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 1, "back"))
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 0, "pick", str(second)))
    assert screen.flow.values["description"] == "Fined" and screen.flow.values["visibility"] == "private"
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 1, "skip"))  # Keep the name
    screen = await services.flows.input_text(COORDINATOR, "Fined twice", 1) or screen
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 3, "skip"))
    screen = await services.flows.press(COORDINATOR, FlowPress(nonce, 4, "skip"))
    assert screen.flow.at_summary
    assert screen.flow.values == {
        "case": str(second),
        "names": "Bek T.",
        "description": "Fined twice",
        "charges": "Art. 2",
        "visibility": "private",
    }


async def test_an_expired_flow_is_purged_with_the_drafts(world: tuple[Services, FakeClock]) -> None:
    services, clock = world
    screen = await services.flows.begin(COORDINATOR, COORDINATOR, "hearing_move")
    clock.advance(FLOW_TTL.total_seconds() + 3600)
    with pytest.raises(FlowEnded):
        await services.flows.press(COORDINATOR, FlowPress(screen.flow.nonce, 0, "back"))
    assert await services.flows.input_text(COORDINATOR, "12", 1) is None
    assert await services.reports.purge_expired() == 1
    assert await _flows(services) == 0


async def test_forget_drops_a_flow(world: tuple[Services, FakeClock]) -> None:
    services, _ = world
    await services.flows.begin(COORDINATOR, COORDINATOR, "hearing_outcome")
    await services.reports.forget(COORDINATOR)
    assert await _flows(services) == 0


async def test_starting_a_report_sets_an_open_flow_aside_and_keeps_the_report(
    world: tuple[Services, FakeClock],
) -> None:
    services, _ = world
    await services.flows.begin(COORDINATOR, COORDINATOR, "hearing_add")
    await services.reports.begin(COORDINATOR)
    await services.flows.set_aside(COORDINATOR)
    assert await _flows(services) == 0
    # What the coordinator types next is the report's: no flow is there to take it.
    assert await services.flows.input_text(COORDINATOR, "He was taken at 9", message_id=5) is None
    async with services.db.read() as conn:
        kinds = [r[0] for r in await conn.execute(text("SELECT kind FROM drafts"))]
    assert kinds and "flow" not in kinds  # the report's draft stays
    await services.flows.set_aside(4242)  # a stranger has no flow, and nothing is refused or audited
