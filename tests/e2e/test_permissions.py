"""Every coordinator command and every triage button, as each kind of person: exactly the allowed ones
change anything or show anything, and every refusal is in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from sqlalchemy import text

from bot.wiring import Services
from messages import catalogs
from tests.e2e.conftest import RunningBot
from tests.e2e.reporting import ADMIN, COORDINATORS, Person, report_settings, settle
from tests.fakebot import FakeBotApi
from tests.workspace_seed import Seed, seed_reports

__all__ = ["report_settings"]

COORDINATOR, REVOKED, REPORTER, STRANGER = 6101, 6102, 6103, 6104
ACTORS = {
    "stranger": STRANGER,
    "reporter": REPORTER,
    "coordinator": COORDINATOR,
    "revoked": REVOKED,
    "admin": ADMIN,
}
COORDINATING = {"coordinator", "admin"}
ADMINS = {"admin"}
OTHER_GROUP = -100888
# Tables whose rows are the workspace's state; users (touched by every update) and the audit log are not.
SNAPSHOT = {
    "reports": "SELECT code, status, assignee, acknowledged_by, reason, duplicate_of, closed_at, revision"
    " FROM reports ORDER BY id",
    "report_events": "SELECT report_id, actor, action FROM report_events ORDER BY id",
    "report_notes": "SELECT report_id, author, kind FROM report_notes ORDER BY id",
    "invites": "SELECT id, created_by, used_by, withdrawn_at FROM invites ORDER BY id",
    "team": "SELECT pseudonym, display_name FROM team ORDER BY pseudonym",
    "roles": "SELECT pseudonym, role FROM user_roles ORDER BY pseudonym, role",
    "cases": "SELECT id, title, description, status, public FROM cases ORDER BY id",
    "hearings": "SELECT id, starts_at, court, address, status, sequence, outcome FROM hearings ORDER BY id",
    "channels": "SELECT chat_id FROM channels ORDER BY chat_id",
    "state": "SELECT key, value FROM bot_state WHERE key = 'coordinator_chat_id'",
    "outbox": "SELECT kind, ref FROM outbox WHERE kind NOT IN ('alert', 'alert_card') ORDER BY id",
    "campaigns": "SELECT id, status, include_channels, approved_by FROM campaigns ORDER BY id",
}


@dataclass(frozen=True)
class Attempt:
    """One command or button press, who may use it, and how to see that it worked."""

    name: str
    allowed: set[str]
    command: str | None = None  # typed in the actor's private chat (or `chat`)
    button: tuple[str, str] | None = None  # (report key, action) pressed on a card in the group
    data: str | None = None  # any other button's callback data, pressed in the actor's private chat
    chat: int | None = None
    shows: str | None = None  # for reads: text (formatted with the world) the answer must contain
    method: str = "sendMessage"  # for reads that answer with a photo or document


ATTEMPTS = [
    Attempt("reports", COORDINATING, "/reports", shows="{list}"),
    Attempt("r", COORDINATING, "/r {note}", shows="Report {note}"),
    Attempt("find", COORDINATING, "/find journalist", shows="{note}"),
    Attempt("team", COORDINATING, "/team", shows="Cora"),
    Attempt("stats", COORDINATING, "/stats", method="sendPhoto"),
    Attempt("hearings", COORDINATING, "/hearings {case}", shows="Pervomaisky"),
    Attempt("audit", ADMINS, "/audit", shows="Audit log"),
    Attempt("export", ADMINS, "/export", method="sendDocument"),
    Attempt("note", COORDINATING, "/note {note} checked with the lawyer"),
    Attempt("ask", COORDINATING, "/ask {note} Are you safe?"),
    Attempt("duplicate", COORDINATING, "/duplicate {dup} {original}"),
    Attempt("name", COORDINATING, "/name Someone"),
    Attempt("invite", ADMINS, "/invite"),
    Attempt("ack", COORDINATING, button=("ack", "ack")),
    Attempt("take", COORDINATING, button=("take", "take")),
    Attempt("verify", COORDINATING, button=("verify", "verify")),
    Attempt("close", COORDINATING, button=("close", "close")),
    Attempt("spam", COORDINATING, button=("spam", "spam")),
    Attempt("reopen", COORDINATING, button=("reopen", "reopen")),
    Attempt("case_new", COORDINATING, "/case_new Aibek A. | Blogger | Art. 278 | public"),
    Attempt("case_edit", COORDINATING, "/case_edit {case} | Case | Edited | Art. 330 | public"),
    Attempt(
        "hearing_add",
        COORDINATING,
        "/hearing_add {case} | 21.12.2031 10:00 | Bishkek city court | Sovetskaya 1",
    ),
    Attempt("hearing_postpone", COORDINATING, "/hearing_postpone {hearing} | 22.12.2031 11:00"),
    Attempt("hearing_move", COORDINATING, "/hearing_move {hearing} | Oktyabrsky court | Chui 2"),
    Attempt("hearing_cancel", COORDINATING, "/hearing_cancel {hearing}"),
    Attempt("case_close", COORDINATING, "/case_close {case}"),
    Attempt("bind", ADMINS, "/bind", chat=OTHER_GROUP),
    Attempt("bind_channel", ADMINS, "/bind_channel", chat=OTHER_GROUP - 1),
    Attempt("campaigns", COORDINATING, "/campaigns", shows="Draft for all"),
    Attempt("campaign", COORDINATING, "/campaign {draft}", shows="Campaign C-{draft}"),
    Attempt("campaign_new", COORDINATING, "/campaign_new Free Aziza"),
    Attempt("campaign_button", COORDINATING, data="cc:{draft}:channels"),
    Attempt("campaign_approve", COORDINATING, "/campaign_approve {awaiting}"),
    Attempt("campaign_cancel", COORDINATING, "/campaign_cancel {draft}"),
    Attempt("revoke", ADMINS, "/revoke Cora"),
]


@pytest.fixture
async def world(fake: FakeBotApi, report_settings: Any) -> AsyncIterator[tuple[RunningBot, dict[str, str]]]:
    """A running bot with a coordinator, a revoked one, a reporter, reports in each state and a case."""
    # No broadcaster passes during the attempts: an approved campaign moving on by itself would look like
    # a change made by the next attempt.
    bot = RunningBot(replace(report_settings, broadcast_interval_s=3600.0))
    await bot.start()
    await Person(fake, ADMIN).say("/help")
    services = bot.app_services()
    for user_id in (COORDINATOR, REVOKED, REPORTER):
        await services.users.seen(user_id, "en")
    for user_id, name in ((COORDINATOR, "Cora"), (REVOKED, "Rex")):
        invite = await services.team.invite(ADMIN)
        await services.team.join(user_id, invite.token)
        await services.team.set_name(user_id, name)
    # Composed by Rex before losing the role: everyone else may approve it.
    awaiting = await services.campaigns.create(REVOKED, REVOKED, "Waiting for approval")
    await services.team.revoke(ADMIN, "Rex")
    reporter = services.pseudonyms.of_user(REPORTER)
    keys = ["ack", "take", "verify", "close", "spam", "reopen", "original", "dup", "note"]
    seeds = [Seed(reporter=reporter, chat=REPORTER) if k == "note" else Seed() for k in keys]
    codes = dict(
        zip(keys, await seed_reports(services.db, services.cipher, seeds, services.clock.now()), strict=True)
    )
    await services.triage.press(ADMIN, codes["verify"], "take")
    await services.triage.press(ADMIN, codes["reopen"], "close")
    case = await services.hearings.create_case(ADMIN, "Case", "Blogger", "Art. 330", True)
    hearing = await services.hearings.add_hearing(
        ADMIN, case, "20.12.2031 10:00", "Pervomaisky court", "Manas 1", None, None
    )
    draft = await services.campaigns.create(ADMIN, ADMIN, "Draft for all")
    async with services.db.write() as conn:
        await conn.execute(
            text(
                "UPDATE campaigns SET status='awaiting_approval', body='Write', created_by='someone'"
                " WHERE id=:i"
            ),
            {"i": awaiting.id},
        )
    world = {
        **codes,
        "case": str(case),
        "hearing": str(hearing.id),
        "list": codes["note"],
        "draft": str(draft.id),
        "awaiting": str(awaiting.id),
    }
    yield bot, world
    await bot.stop()


async def snapshot(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Return the workspace's state."""
    async with services.db.read() as conn:
        return {name: [tuple(r) for r in await conn.execute(text(sql))] for name, sql in SNAPSHOT.items()}


async def refusals(services: Services) -> int:
    """Count refused attempts in the audit log."""
    async with services.db.read() as conn:
        return int(
            (await conn.execute(text("SELECT count(*) FROM audit_log WHERE outcome='refused'"))).scalar() or 0
        )


async def attempt(fake: FakeBotApi, actor: int, item: Attempt, world: dict[str, str]) -> list[str]:
    """Make the attempt as `actor`; return the texts the bot answered with."""
    if item.button is not None or item.data is not None:
        if item.button is not None:
            key, action = item.button
            update = fake.add_callback_query(
                user_id=actor,
                data=f"t:{world[key]}:{action}",
                message_id=1,
                chat_id=COORDINATORS,
                chat_type="supergroup",
            )
        else:
            assert item.data is not None
            update = fake.add_callback_query(user_id=actor, data=item.data.format(**world), message_id=1)
        query_id = str(update["callback_query"]["id"])
        calls = await fake.wait_for(
            "answerCallbackQuery",
            timeout=15,
            predicate=lambda c: str(c.params.get("callback_query_id")) == query_id,
        )
        return [str(calls[0].params.get("text", ""))]
    assert item.command is not None
    chat = actor if item.chat is None else item.chat
    before = len(fake.sent(chat_id=chat))
    fake.add_message(
        user_id=actor,
        chat_id=chat,
        chat_type="private" if item.chat is None else "supergroup",
        text=item.command.format(**world),
    )
    # Wait for the first answer in that chat; a photo or document may follow a progress note.
    deadline = 20.0
    while len(fake.sent(chat_id=chat)) <= before and deadline > 0:
        await settle(0.05)
        deadline -= 0.05
    if item.method != "sendMessage":
        await settle(0.3)
    replies = fake.sent(chat_id=chat)[before:]
    return [str(c.params.get("text") or c.params.get("caption") or c.method) for c in replies]


@pytest.mark.parametrize("role", list(ACTORS))
async def test_only_the_allowed_change_or_see_anything(
    fake: FakeBotApi, world: tuple[RunningBot, dict[str, str]], role: str
) -> None:
    bot, names = world
    services = bot.app_services()
    actor = ACTORS[role]
    texts = catalogs()
    refusal_texts = {
        texts.text("en", key)
        for key in ("coord.refused", "coord.admin_only", "cases.refused", "channel.refused", "bind.refused")
    }
    problems = []
    for item in ATTEMPTS:
        await settle(0.2)
        before, refused_before = await snapshot(services), await refusals(services)
        sent_before = len(fake.sent())
        answers = await attempt(fake, actor, item, names)
        await settle(0.3)
        after, refused_after = await snapshot(services), await refusals(services)
        changed = {name for name in SNAPSHOT if before[name] != after[name]}
        allowed = role in item.allowed
        shown = item.shows is None or any(item.shows.format(**names) in a for a in answers)
        media = item.method == "sendMessage" or any(
            c.method == item.method for c in fake.sent()[sent_before:] if c.params.get("chat_id") == actor
        )
        reads = item.shows is not None or item.method != "sendMessage"
        if allowed:
            if reads and not (shown and media):
                problems.append(f"{item.name}: allowed but did not show ({answers})")
            if not reads and not changed:
                problems.append(f"{item.name}: allowed but changed nothing ({answers})")
            if refused_after != refused_before:
                problems.append(f"{item.name}: allowed but audited as refused")
        else:
            if changed:
                problems.append(f"{item.name}: refused yet changed {sorted(changed)}")
            if item.shows is not None and shown:
                problems.append(f"{item.name}: refused yet showed it")
            if item.method != "sendMessage" and any(
                c.method == item.method for c in fake.sent()[sent_before:]
            ):
                problems.append(f"{item.name}: refused yet sent a {item.method}")
            if not any(a in refusal_texts for a in answers):
                problems.append(f"{item.name}: no clear refusal ({answers})")
            if refused_after != refused_before + 1:
                problems.append(f"{item.name}: refusal not audited ({refused_after - refused_before})")
    assert not problems, "\n".join(problems)
