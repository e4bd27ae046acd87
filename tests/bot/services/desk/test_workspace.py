"""The coordinators' workspace on real services and a real SQLite file: invites, triage, the desk,
the audit chain, exports and weekly counts."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.domain.errors import Refused
from bot.runtime.clock import FakeClock
from bot.runtime.delivery import Receipt
from bot.security.bindings import payload_binding
from bot.services.access.roles import NotAllowed
from bot.services.access.team import TeamError
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from storage.report_queries import ReportQuery
from storage.reports import ReportNotFound
from tests.conftest import make_settings
from tests.workspace_seed import Seed, seed_reports

ADMIN = 5001
AIDA, BEK, STRANGER, REPORTER = 6001, 6002, 6003, 6004
COORDINATORS = -100777
NOW = datetime.fromisoformat("2026-11-20T06:00:00+00:00")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """An admin from settings and a coordinators' chat."""
    return make_settings(tmp_path, admin_ids=frozenset({ADMIN}), coordinator_chat_id=COORDINATORS)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """The real services on a fake clock."""
    clock = FakeClock(NOW)
    opened = await open_services(settings, clock, build_limiter(settings, clock))
    yield opened
    await opened.close()


async def join(services: Services, user_id: int, name: str | None = None) -> None:
    """Make a coordinator the way people become one: an admin's invite, used once."""
    await services.users.seen(user_id, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(user_id, invite.token)
    if name is not None:
        await services.team.set_name(user_id, name)


async def seed(services: Services, *seeds: Seed) -> list[str]:
    """Create reports directly in the database."""
    return await seed_reports(services.db, services.cipher, list(seeds), services.clock.now())


async def report(services: Services, code: str) -> dict[str, object]:
    """Return a report's row."""
    async with services.db.read() as conn:
        row = (
            (await conn.execute(text("SELECT * FROM reports WHERE code = :c"), {"c": code})).mappings().one()
        )
    return dict(row)


async def audit_rows(services: Services) -> list[tuple[str, str, str | None]]:
    """Return (action, outcome, target) of every audit entry, oldest first."""
    async with services.db.read() as conn:
        rows = await conn.execute(text("SELECT action, outcome, target FROM audit_log ORDER BY id"))
        return [(r.action, r.outcome, r.target) for r in rows]


# ---------------------------------------------------------------------------------------------- invites


async def test_an_invite_works_once_and_expires(services: Services) -> None:
    await services.users.seen(AIDA, "en")
    await services.users.seen(BEK, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(AIDA, invite.token)
    with pytest.raises(TeamError) as reused:
        await services.team.join(BEK, invite.token)
    assert reused.value.key == "team.invite_used"
    late = await services.team.invite(ADMIN)
    assert isinstance(services.clock, FakeClock)
    services.clock.advance(timedelta(hours=25).total_seconds())
    with pytest.raises(TeamError) as expired:
        await services.team.join(BEK, late.token)
    assert expired.value.key == "team.invite_expired"
    with pytest.raises(TeamError) as unknown:
        await services.team.join(BEK, "x" * 32)
    assert unknown.value.key == "team.invite_unknown"
    roles = sorted(sorted(m.roles) for m in await services.team.members(ADMIN))
    assert roles == [["admin"], ["coordinator"]]
    refused = [row for row in await audit_rows(services) if row[1] == "refused"]
    assert [r[0] for r in refused] == ["team.join"] * 3


async def test_only_admins_invite_and_withdrawn_invites_do_not_work(services: Services) -> None:
    await join(services, AIDA, "Aida")
    with pytest.raises(NotAllowed):
        await services.team.invite(AIDA)
    invite = await services.team.invite(ADMIN)
    assert await services.team.withdraw(ADMIN, invite.id)
    with pytest.raises(TeamError):
        await services.team.join(BEK, invite.token)
    async with services.db.read() as conn:
        stored = (await conn.execute(text("SELECT token_hash FROM invites"))).scalars().all()
    assert invite.token not in stored  # only its hash is kept


async def test_a_revoked_coordinator_is_refused_at_once(services: Services) -> None:
    await join(services, AIDA, "Aida")
    (code,) = await seed(services, Seed())
    await services.triage.press(AIDA, code, "ack")
    assert await services.team.revoke(ADMIN, "aida") == ("Aida", 0)
    before = await report(services, code)
    with pytest.raises(NotAllowed):
        await services.triage.press(AIDA, code, "take")
    assert await report(services, code) == before
    assert (await audit_rows(services))[-1] == ("triage.take", "refused", code)
    with pytest.raises(TeamError):
        await services.team.revoke(ADMIN, "nobody")
    await join(services, BEK, "Aida")  # a revoked member's name is free again
    await services.users.seen(STRANGER, "en")
    admin_ref = services.pseudonyms.of_user(ADMIN)[:10]
    with pytest.raises(TeamError) as admin:
        await services.team.revoke(ADMIN, admin_ref)
    assert admin.value.key == "team.revoke_admin"


async def test_display_names_are_cleaned_and_bounded(services: Services) -> None:
    await join(services, AIDA)
    assert await services.team.set_name(AIDA, "  Aida \n  K.  ") == "Aida K."
    for bad in ("", "x" * 33, "Aida\u202e"):
        with pytest.raises(TeamError):
            await services.team.set_name(AIDA, bad)
    await join(services, BEK)
    with pytest.raises(TeamError) as taken:
        await services.team.set_name(BEK, "AIDA k.")
    assert taken.value.key == "team.name_taken"
    with pytest.raises(NotAllowed):
        await services.team.set_name(STRANGER, "Spy")


# ----------------------------------------------------------------------------------------------- triage


async def test_triage_walks_the_states_and_says_who_has_it(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await join(services, BEK, "Bek")
    (code,) = await seed(services, Seed())
    assert (await services.triage.press(AIDA, code, "verify")).key == "triage.take_first"
    assert (await services.triage.press(AIDA, code, "ack")).changed
    answer = await services.triage.press(BEK, code, "ack")
    assert (answer.key, answer.params["who"]) == ("triage.already_acknowledged", "Aida")
    assert (await services.triage.press(BEK, code, "take")).key == "triage.done_take"
    answer = await services.triage.press(AIDA, code, "take")
    assert (answer.key, answer.params["who"], answer.changed) == ("triage.taken_by", "Bek", False)
    assert (await services.triage.press(AIDA, code, "verify")).changed
    assert (await services.triage.press(AIDA, code, "close")).changed
    assert (await services.triage.press(BEK, code, "spam")).key == "triage.already_final"
    row = await report(services, code)
    assert (row["status"], row["revision"], row["closed_at"] is not None) == ("closed", 4, True)
    assert (await services.triage.press(AIDA, code, "reopen")).changed
    row = await report(services, code)
    assert (row["status"], row["closed_at"]) == ("in_progress", None)
    events = [
        a for a, outcome, _ in await audit_rows(services) if a.startswith("triage.") and outcome == "ok"
    ]
    assert events == ["triage.ack", "triage.take", "triage.verify", "triage.close", "triage.reopen"]


async def test_a_revoked_assignee_no_longer_blocks_taking(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await join(services, BEK, "Bek")
    (code,) = await seed(services, Seed())
    await services.triage.press(AIDA, code, "take")
    await services.team.revoke(ADMIN, "Aida")
    assert (await services.triage.press(BEK, code, "take")).changed
    assert (await report(services, code))["assignee"] == services.pseudonyms.of_user(BEK)


async def test_two_coordinators_taking_at_once_never_fork(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await join(services, BEK, "Bek")
    codes = await seed(services, *[Seed() for _ in range(20)])
    for code in codes:
        first, second = await asyncio.gather(
            services.triage.press(AIDA, code, "take"), services.triage.press(BEK, code, "take")
        )
        assert sorted([first.key, second.key]) == ["triage.done_take", "triage.taken_by"]
        row = await report(services, code)
        winner = AIDA if first.changed else BEK
        assert row["assignee"] == services.pseudonyms.of_user(winner) and row["revision"] == 1
    async with services.db.read() as conn:
        takes = (await conn.execute(text("SELECT count(*) FROM report_events WHERE action='take'"))).scalar()
    assert takes == len(codes)


async def test_duplicates_need_two_real_different_codes(services: Services) -> None:
    await join(services, AIDA, "Aida")
    first, second = await seed(services, Seed(), Seed())
    with pytest.raises(Refused) as same:
        await services.triage.mark_duplicate(AIDA, second, second)
    assert same.value.key == "triage.duplicate_self"
    with pytest.raises(ReportNotFound):
        await services.triage.mark_duplicate(AIDA, second, "R-22222")
    with pytest.raises(Refused) as malformed:
        await services.triage.mark_duplicate(AIDA, "R-0O0O0", first)
    assert malformed.value.key == "desk.code_malformed"
    assert (await services.triage.mark_duplicate(AIDA, second.lower(), first)).changed
    row = await report(services, second)
    assert (row["status"], row["reason"], row["duplicate_of"]) == ("rejected", "duplicate", first)
    refusals = [(a, t) for a, outcome, t in await audit_rows(services) if outcome == "refused"]
    assert [a for a, _ in refusals] == ["triage.duplicate"] * 3


async def test_the_card_is_edited_once_it_was_sent(services: Services) -> None:
    await join(services, AIDA, "Aida")
    (code,) = await seed(services, Seed())
    # The delivery worker reports the card's message id; triage then edits that message.
    async with services.db.write() as conn:
        await services.triage.card_sent(conn, [Receipt("alert_card", code, COORDINATORS, 77)])
    await services.triage.press(AIDA, code, "take")
    await services.triage.press(AIDA, code, "verify")
    async with services.db.read() as conn:
        rows = (
            await conn.execute(
                text("SELECT uid, status, payload FROM outbox WHERE kind='alert_edit' ORDER BY id")
            )
        ).all()
    assert [r.status for r in rows] == ["cancelled", "pending"]  # the older edit never flickers past
    params = services.cipher.decrypt_json(rows[-1].payload, binding=payload_binding(rows[-1].uid))
    assert params["message_id"] == 77 and params["chat_id"] == COORDINATORS
    assert "verified — Aida" in params["text"]
    assert [b["callback_data"] for row in params["reply_markup"]["inline_keyboard"] for b in row] == [
        f"t:{code}:close"
    ]


# ------------------------------------------------------------------------------------------------ desk


async def test_lists_filter_and_page_without_decrypting(services: Services) -> None:
    await join(services, AIDA, "Aida")
    codes = await seed(
        services,
        *[Seed(category="detention", region="osh_city") for _ in range(13)],
        *[Seed(category="threats", region="bishkek") for _ in range(4)],
    )
    await services.triage.press(AIDA, codes[0], "take")
    query = await services.desk.parse_query(AIDA, ["detention", "region=osh_city"])
    first = await services.desk.page(AIDA, query)
    assert [line.report.code for line in first.lines] == codes[12:2:-1]
    assert first.next_before is not None
    second = await services.desk.page(AIDA, query, first.next_before)
    assert [line.report.code for line in second.lines] == codes[2::-1] and second.next_before is None
    mine = await services.desk.page(AIDA, await services.desk.parse_query(AIDA, ["assignee=me"]))
    assert [(line.report.code, line.assignee) for line in mine.lines] == [(codes[0], "Aida")]
    named = await services.desk.parse_query(AIDA, ["assignee=aida", "status=in_progress"])
    assert named == mine_query(services, "in_progress")
    nobody = await services.desk.page(
        AIDA, await services.desk.parse_query(AIDA, ["assignee=none", "threats"])
    )
    assert len(nobody.lines) == 4
    for bad in (["status=lost"], ["since=yesterday"], ["assignee=ghost"], ["colour=red"]):
        with pytest.raises(Refused):
            await services.desk.parse_query(AIDA, bad)
    with pytest.raises(NotAllowed):
        await services.desk.page(STRANGER, ReportQuery())


def mine_query(services: Services, status: str) -> ReportQuery:
    """The query `assignee=aida status=…` should parse to."""
    return ReportQuery(status=status, assignee=services.pseudonyms.of_user(AIDA))


async def test_the_full_view_is_audited_and_shows_the_conversation(services: Services) -> None:
    await join(services, AIDA, "Aida")
    reporter = services.pseudonyms.of_user(REPORTER)
    await services.users.seen(REPORTER, "ru")
    (code,) = await seed(services, Seed(reporter=reporter, chat=REPORTER, text="Их увезли в ОВД <b>"))
    await services.desk.note(AIDA, code, "Lawyer called, on the way")
    await services.contact.ask(AIDA, code, "Which station?")
    question = await deliver_question(services, code)
    answered = await services.contact.answer(
        REPORTER, REPORTER, question, f"question about {code}", 901, "Oktyabrsky"
    )
    assert answered is not None and answered.code == code
    view = await services.desk.view(AIDA, code)
    assert view.body.text == "Их увезли в ОВД <b>"
    assert [(n.kind, n.author, n.text) for n in view.notes] == [
        ("note", "Aida", "Lawyer called, on the way"),
        ("question", "Aida", "Which station?"),
        ("answer", None, "Oktyabrsky"),
    ]
    assert ("desk.view", "ok", code) in await audit_rows(services)
    with pytest.raises(ReportNotFound):
        await services.desk.view(AIDA, "R-22222")
    assert (await audit_rows(services))[-1] == ("desk.view", "refused", "R-22222")


async def deliver_question(services: Services, code: str) -> int:
    """Play the delivery worker for the newest question: report its message id; return that id."""
    async with services.db.write() as conn:
        row = (
            await conn.execute(
                text("SELECT id, ref FROM outbox WHERE kind='contact_question' ORDER BY id DESC LIMIT 1")
            )
        ).one()
        message_id: int = 700 + row.id
        await services.contact.question_sent(
            conn, [Receipt("contact_question", row.ref, REPORTER, message_id)]
        )
    assert row.ref.startswith(code)
    return message_id


async def test_answers_only_come_from_the_reporter_in_reply_to_a_question(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await services.users.seen(REPORTER, "en")
    (code,) = await seed(services, Seed(reporter=services.pseudonyms.of_user(REPORTER), chat=REPORTER))
    await services.contact.ask(AIDA, code, "Are you safe?")
    question = await deliver_question(services, code)
    answer = services.contact.answer
    # Not a reply to the question (the receipt also names the code): not an answer.
    assert await answer(REPORTER, REPORTER, question + 1, f"receipt {code}", 950, "hello") is None
    assert await answer(REPORTER, REPORTER, question, "no code here", 950, "hello") is None
    with pytest.raises(Refused):
        await answer(STRANGER, STRANGER, question, f"about {code}", 950, "I am not them")
    with pytest.raises(Refused):
        await answer(REPORTER, REPORTER, question, f"about {code}", 950, "x" * 3001)
    passed = await answer(REPORTER, REPORTER, question, f"about {code}", 951, "Yes, at home")
    assert passed is not None and passed.code == code
    async with services.db.read() as conn:
        rows = (await conn.execute(text("SELECT uid, payload FROM outbox WHERE kind='cleanup'"))).all()
    deletions = [services.cipher.decrypt_json(r.payload, binding=payload_binding(r.uid)) for r in rows]
    assert {"chat_id": REPORTER, "message_ids": [question, 951]} in deletions  # off the phone once passed on
    for _ in range(19):
        await answer(REPORTER, REPORTER, question, f"about {code}", 952, "again")
    with pytest.raises(Refused) as limited:
        await answer(REPORTER, REPORTER, question, f"about {code}", 953, "and again")
    assert limited.value.key == "contact.answer_limit"


async def test_questions_to_anonymous_or_forgotten_reporters_are_refused(services: Services) -> None:
    await join(services, AIDA, "Aida")
    await services.users.seen(REPORTER, "en")
    anonymous, contactable = await seed(
        services, Seed(), Seed(reporter=services.pseudonyms.of_user(REPORTER), chat=REPORTER)
    )
    with pytest.raises(Refused) as refused:
        await services.contact.ask(AIDA, anonymous, "Hello?")
    assert refused.value.key == "contact.unreachable"
    await services.contact.ask(AIDA, contactable, "Are you safe?")
    await services.reports.forget(REPORTER)
    with pytest.raises(Refused) as forgotten:
        await services.contact.ask(AIDA, contactable, "Still there?")
    assert forgotten.value.key == "contact.unreachable"


async def test_status_updates_reach_the_reporter_without_names(services: Services) -> None:
    await join(services, AIDA, "Aida Secret-Surname")
    await services.users.seen(REPORTER, "en")
    (code,) = await seed(services, Seed(reporter=services.pseudonyms.of_user(REPORTER), chat=REPORTER))
    await services.triage.press(AIDA, code, "take")
    await services.triage.press(AIDA, code, "close")
    async with services.db.read() as conn:
        rows = (
            await conn.execute(text("SELECT uid, payload FROM outbox WHERE kind='contact' ORDER BY id"))
        ).all()
    texts = [services.cipher.decrypt_json(r.payload, binding=payload_binding(r.uid))["text"] for r in rows]
    # The reporter's own code only: the coordinators' one would name the report on a seized phone.
    shown = services.reports.reporter_code(code)
    assert len(texts) == 2 and all(shown in t and code not in t and "Aida" not in t for t in texts)


async def test_find_reads_every_report_and_matches_all_words(services: Services) -> None:
    await join(services, AIDA, "Aida")
    codes = await seed(
        services,
        Seed(text="Police came to the office of the newspaper"),
        Seed(text="Милиция пришла в офис газеты"),
        Seed(text="Nothing related", place="Police station 5"),
    )
    hits, scanned = await services.desk.find(AIDA, "POLICE office")
    assert [h.report.code for h in hits] == [codes[0]] and scanned == 3
    hits, _ = await services.desk.find(AIDA, "милиция")
    assert [h.report.code for h in hits] == [codes[1]]
    hits, _ = await services.desk.find(AIDA, "police")
    assert {h.report.code for h in hits} == {codes[0], codes[2]}
    with pytest.raises(Refused):
        await services.desk.find(AIDA, "   ")


# ----------------------------------------------------------------------------------------------- audit


async def test_the_audit_chain_detects_edits_deletions_and_cut_tails(services: Services) -> None:
    await join(services, AIDA, "Aida")
    (code,) = await seed(services, Seed())
    for action in ("ack", "take", "verify", "close"):
        await services.triage.press(AIDA, code, action)
    verdict = await services.audit.verify()
    assert verdict.intact and verdict.entries == len(await audit_rows(services))

    async def tamper(sql: str) -> tuple[str, ...]:
        async with services.db.write() as conn:
            await conn.execute(text(sql))
        return (await services.audit.verify()).problems

    assert any(
        "entry 3 was altered" in p for p in await tamper("UPDATE audit_log SET target='R-XXXXX' WHERE id=3")
    )


async def test_deleting_rows_is_detected_even_after_new_entries(services: Services) -> None:
    await join(services, AIDA, "Aida")
    (code,) = await seed(services, Seed())
    for action in ("ack", "take", "verify"):
        await services.triage.press(AIDA, code, action)
    async with services.db.write() as conn:
        last = (await conn.execute(text("SELECT max(id) FROM audit_log"))).scalar()
        await conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": last})
    assert any("cut" in p for p in (await services.audit.verify()).problems)
    # A later legitimate action does not paper over the gap.
    await services.triage.press(AIDA, code, "close")
    assert any("missing" in p for p in (await services.audit.verify()).problems)


async def test_removing_the_seal_is_written_into_the_chain(services: Services) -> None:
    await join(services, AIDA, "Aida")
    async with services.db.write() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)"))
        await conn.execute(text("DELETE FROM bot_state WHERE key = 'audit_head'"))
    await services.team.set_name(AIDA, "Aida again")
    verdict = await services.audit.verify()
    assert any("seal was removed" in p for p in verdict.problems)


async def test_concurrent_appends_keep_one_chain(services: Services) -> None:
    await join(services, AIDA, "Aida")
    codes = await seed(services, *[Seed() for _ in range(30)])
    await asyncio.gather(*(services.triage.press(AIDA, c, "ack") for c in codes))
    assert (await services.audit.verify()).intact


# ---------------------------------------------------------------------------------------------- export


async def test_export_streams_the_filtered_reports_in_both_formats(services: Services) -> None:
    await join(services, AIDA, "Aida")
    codes = await seed(
        services,
        Seed(category="detention", text='=HYPERLINK("http://x")'),
        Seed(category="threats"),
        Seed(category="detention", text="Second, with “quotes”, commas\nand lines"),
    )
    await services.desk.note(AIDA, codes[0], "Checked with the lawyer")
    await services.triage.press(AIDA, codes[0], "take")
    query = await services.desk.parse_query(ADMIN, ["category=detention"])
    await services.exports.allow(ADMIN, query, ["csv", "json"])
    with pytest.raises(NotAllowed):
        await services.exports.allow(AIDA, query, ["csv"])
    out_csv, out_json = io.StringIO(), io.StringIO()
    summary = await services.exports.write(query, {"csv": out_csv, "json": out_json})
    assert summary.rows == 2
    rows = list(csv.DictReader(io.StringIO(out_csv.getvalue())))
    assert [r["code"] for r in rows] == [codes[0], codes[2]]
    assert rows[0]["text"].startswith("'=HYPERLINK")  # a spreadsheet will not run it
    assert rows[0]["assignee"] == "Aida" and "Checked with the lawyer" in rows[0]["notes"]
    assert rows[1]["text"] == "Second, with “quotes”, commas\nand lines"
    assert rows[0]["created_at_utc"] == "2026-11-20T06:00:00+00:00"
    assert rows[0]["created_at_local"] == "2026-11-20T12:00:00+06:00"
    documents = json.loads(out_json.getvalue())
    assert [d["code"] for d in documents] == [codes[0], codes[2]]
    assert documents[0]["text"].startswith("=HYPERLINK") and documents[0]["location"] == [42.87, 74.59]
    assert documents[0]["notes"][0]["text"] == "Checked with the lawyer"
    exports = [r for r in await audit_rows(services) if r[0] == "export"]
    assert [r[1] for r in exports] == ["ok", "refused"]


# ----------------------------------------------------------------------------------------------- stats


async def test_stats_count_weeks_by_category_and_draw_them(services: Services) -> None:
    await join(services, AIDA, "Aida")
    codes = await seed(
        services, Seed(category="detention"), Seed(category="detention"), Seed(category="online")
    )
    await services.triage.press(AIDA, codes[0], "close")
    assert isinstance(services.clock, FakeClock)
    services.clock.advance(timedelta(days=7).total_seconds())
    await seed(services, Seed(category="threats"))
    picture = await services.stats.picture(AIDA, "ru")
    counts = picture.counts
    assert len(counts.weeks) == 12 and counts.weeks[-1].weekday() == 0
    assert counts.by_category["detention"][-2:] == [2, 0] and counts.by_category["threats"][-1] == 1
    assert (counts.opened[-2:], counts.closed[-2:]) == ([2, 1], [1, 0])
    assert picture.png.startswith(b"\x89PNG")
    with pytest.raises(NotAllowed):
        await services.stats.picture(STRANGER, "en")
