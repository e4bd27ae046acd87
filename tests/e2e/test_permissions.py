"""Every coordinator command and every triage button, as each kind of person: exactly the allowed ones
change anything or show anything, and every refusal is in the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from sqlalchemy import text

from bot.app import dispatch_update
from bot.wiring import Services
from messages import catalogs
from tests.e2e.reporting import report_settings
from tests.fakebot import FakeBotApi
from tests.support.barrier import quiet
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
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
    "duty": "SELECT pseudonym FROM duty ORDER BY pseudonym",
    "attendance": "SELECT * FROM attendance ORDER BY 1, 2",
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
    chat: int | None = None  # where the command is typed or the button pressed, if not in private
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
    # The world's chat is pinned by JARCHY_COORDINATOR_CHAT_ID: nobody moves it (tests/e2e/test_bind.py
    # covers an unpinned chat).
    Attempt("bind", set(), "/bind", chat=OTHER_GROUP),
    Attempt("bind_channel", ADMINS, "/bind_channel", chat=OTHER_GROUP - 1),
    Attempt("campaigns", COORDINATING, "/campaigns", shows="Draft for all"),
    Attempt("campaign", COORDINATING, "/campaign {draft}", shows="Campaign C-{draft}"),
    Attempt("campaign_new", COORDINATING, "/campaign_new Free Aziza"),
    Attempt("campaign_button", COORDINATING, data="cc:{draft}:channels"),
    Attempt("campaign_approve", COORDINATING, "/campaign_approve {awaiting}"),
    Attempt("campaign_cancel", COORDINATING, "/campaign_cancel {draft}"),
    Attempt("duty", COORDINATING, "/duty on"),
    Attempt("duty_button", COORDINATING, data="duty:off"),
    # Buttons forged onto one of the bot's messages in a group it was added to: nobody's press works there.
    Attempt("list_button_elsewhere", set(), data="rl:2:{top}:", chat=OTHER_GROUP),
    Attempt("team_button_elsewhere", set(), data="tm:rv:{cora}", chat=OTHER_GROUP),
    Attempt("digest_button_elsewhere", set(), data="o:{note}", chat=OTHER_GROUP),
    Attempt("campaign_button_elsewhere", set(), data="cc:{draft}:channels", chat=OTHER_GROUP),
    # Attendance only on a public or followed case's hearing; an unknown hearing reads the same.
    Attempt("attend_private", set(), data="att:{private_hearing}:0"),
    Attempt("attend_unknown", set(), data="att:999999:0"),
    Attempt("revoke", ADMINS, "/revoke Cora"),
]


@pytest.fixture
async def world(fake: FakeBotApi, report_settings: Any) -> AsyncIterator[tuple[RunningBot, dict[str, str]]]:
    """A running bot with a coordinator, a revoked one, a reporter, reports in each state and a case."""
    # No broadcaster passes during the attempts: an approved campaign moving on by itself would look like
    # a change made by the next attempt.
    # Each actor makes every attempt within a minute or so: more than the flood guard lets one person send.
    bot = RunningBot(replace(report_settings, broadcast_interval_s=3600.0, flood_per_minute=1000))
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
    private = await services.hearings.create_case(ADMIN, "Quiet case", "Witness", "Art. 341", False)
    private_hearing = await services.hearings.add_hearing(
        ADMIN, private, "22.12.2031 10:00", "Leninsky court", "Chui 10", None, None
    )
    cora = next(m.ref for m in await services.team.members(ADMIN) if m.name == "Cora")
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
        "private_hearing": str(private_hearing.id),
        "cora": cora,
        "top": "999999",
    }
    # Rex's revocation removes him from the group (audited as the system's once the ban is through): it
    # must be over before the first attempt, or it looks like that attempt's change. The pass that follows
    # removals is the job's own, run here at once instead of waiting for the job's first turn.
    await quiet(fake, services)
    await services.members.follow_removals()
    await until_audited(services, "members.removed")
    # What the setup queued (alerts of the seeded reports, the team's notices) is out before any attempt.
    await quiet(fake, services)
    yield bot, world
    await bot.stop()


async def until_audited(services: Services, action: str, timeout: float = 15.0) -> None:
    """Wait until the audit log has an entry for `action` (work the bot does on its own, out of the
    barrier's sight)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    query = text("SELECT count(*) FROM audit_log WHERE action = :a")
    while True:
        async with services.db.read() as conn:
            if (await conn.execute(query, {"a": action})).scalar():
                return
        if loop.time() > deadline:
            raise TimeoutError(f"no {action} in the audit log after {timeout} s")
        await asyncio.sleep(0.02)


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


async def attempt(
    fake: FakeBotApi, services: Services, actor: int, item: Attempt, world: dict[str, str]
) -> list[str]:
    """Make the attempt as `actor`; return the texts the bot answered with."""
    return (await attempt_update(fake, services, actor, item, world))[0]


async def attempt_update(
    fake: FakeBotApi, services: Services, actor: int, item: Attempt, world: dict[str, str]
) -> tuple[list[str], dict[str, Any]]:
    """Make the attempt as `actor` and wait until the bot has finished with it (handled, its replies and
    whatever it queued sent); return the texts the bot answered with and the update it made."""
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
        elif item.chat is not None:
            assert item.data is not None
            update = fake.add_callback_query(
                user_id=actor,
                data=item.data.format(**world),
                message_id=1,
                chat_id=item.chat,
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
        await quiet(fake, services)
        return [str(calls[0].params.get("text", ""))], update
    assert item.command is not None
    chat = actor if item.chat is None else item.chat
    before = len(fake.sent(chat_id=chat))
    update = fake.add_message(
        user_id=actor,
        chat_id=chat,
        chat_type="private" if item.chat is None else "supergroup",
        text=item.command.format(**world),
    )
    # Every answer, a photo or document after a progress note included, is sent before the update is done.
    await quiet(fake, services, timeout=20)
    replies = fake.sent(chat_id=chat)[before:]
    return [str(c.params.get("text") or c.params.get("caption") or c.method) for c in replies], update


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
        for key in (
            "coord.refused",
            "coord.admin_only",
            "cases.refused",
            "channel.refused",
            "bind.refused",
            "bind.pinned",
        )
    } | {texts.plain("en", key) for key in ("coord.wrong_chat", "attend.stale")}
    problems = []
    for item in ATTEMPTS:
        # The previous attempt left nothing running (attempt waits for that), so what changes is this one's.
        before, refused_before = await snapshot(services), await refusals(services)
        sent_before = len(fake.sent())
        sent_in_chat = len(fake.sent(chat_id=item.chat)) if item.chat is not None else 0
        answers = await attempt(fake, services, actor, item, names)
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
            if (
                item.data is not None
                and item.chat is not None
                and fake.sent(chat_id=item.chat)[sent_in_chat:]
            ):
                problems.append(f"{item.name}: refused yet posted into the chat it was pressed in")
            if not any(a in refusal_texts for a in answers):
                problems.append(f"{item.name}: no clear refusal ({answers})")
            if refused_after != refused_before + 1:
                problems.append(f"{item.name}: refusal not audited ({refused_after - refused_before})")
    assert not problems, "\n".join(problems)


async def ok_entries(services: Services) -> int:
    """Count allowed actions people took in the audit log (not the bot's own follow-ups, such as removing a
    revoked coordinator from the group once Telegram confirms, which land whenever the job runs)."""
    async with services.db.read() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM audit_log WHERE outcome='ok' AND actor != 'system'")
                )
            ).scalar()
            or 0
        )


@pytest.mark.parametrize("role", ["coordinator", "admin"])
async def test_a_retried_update_acts_once(
    fake: FakeBotApi, world: tuple[RunningBot, dict[str, str]], role: str
) -> None:
    """Every allowed command and button, run a second time for the same update (as after a crash before
    its done-mark), changes nothing more, audits nothing more and says it was already done."""
    bot, names = world
    services = bot.app_services()
    assert bot.app is not None
    actor = ACTORS[role]
    already = catalogs().plain("en", "update.already_done")
    problems = []
    for item in ATTEMPTS:
        if role not in item.allowed:
            continue
        _, update = await attempt_update(fake, services, actor, item, names)
        # The first run answers before it returns (a view is audited after it is shown): wait until its
        # update is done, or its own late audit entry would count against the second run.
        await quiet(fake, services)
        before, audited = await snapshot(services), await ok_entries(services)
        sent = len(fake.sent())
        await dispatch_update(bot.app, update)
        # The second run's replies are sent before dispatch returns; anything it queued, by now.
        await quiet(fake, services)
        if await snapshot(services) != before:
            problems.append(f"{item.name}: the second run changed something")
        if await ok_entries(services) != audited:
            problems.append(f"{item.name}: the second run was audited again")
        again = [
            str(c.params.get("text", ""))
            for c in fake.sent()[sent:]
            if c.method in ("sendMessage", "answerCallbackQuery", "sendPhoto", "sendDocument")
        ]
        said_done = bool(again) and all(
            a in (already, catalogs().text("en", "update.already_done")) for a in again
        )
        # A plain read (a list's page, recorded nowhere) may simply be shown again.
        shown_again = item.shows is not None and any(item.shows.format(**names) in a for a in again)
        if not (said_done or shown_again):
            problems.append(f"{item.name}: the second run answered {again}")
    assert not problems, "\n".join(problems)
