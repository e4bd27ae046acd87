"""The coordinators' workspace over the fake Bot API: invite → join → take → ask → answer → close, two
coordinators taking at once, a filtered export, and `jarchy audit verify` catching a tampered row."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re

from sqlalchemy import text

from bot.settings import Settings
from messages import catalogs
from storage.database import Database
from tests.e2e.reporting import report_settings, reporting_bot
from tests.e2e.test_reports import walk_to_review
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import run_jarchy
from tests.workspace_seed import Seed, seed_reports

__all__ = ["report_settings", "reporting_bot"]

AIDA, BEK = 6001, 6002
T = catalogs()


async def join_team(fake: FakeBotApi, user_id: int, name: str) -> Person:
    """An admin invites, the person opens the link and picks a display name."""
    admin = Person(fake, ADMIN)
    reply = await admin.say("/invite")
    match = re.search(r"start=(inv_[\w-]+)", reply["text"])
    assert match is not None, reply["text"]
    person = Person(fake, user_id)
    joined = await person.say(f"/start {match.group(1)}")
    assert joined["text"] == T.text("en", "team.joined")
    assert (await person.say(f"/name {name}"))["text"] == T.text("en", "team.name_set", name=name)
    return person


async def group_reply(fake: FakeBotApi, user_id: int, text_: str, reply_to: int) -> None:
    """A coordinator writes in the coordinators' group, replying to one of the bot's messages."""
    fake.add_message(
        user_id=user_id,
        chat_id=COORDINATORS,
        chat_type="supergroup",
        text=text_,
        reply_to_message_id=reply_to,
    )


async def press_card(fake: FakeBotApi, user_id: int, data: str, message_id: int) -> str:
    """Press a triage button on the card in the group; return the answer shown."""
    update = fake.add_callback_query(
        user_id=user_id, data=data, message_id=message_id, chat_id=COORDINATORS, chat_type="supergroup"
    )
    query_id = str(update["callback_query"]["id"])
    (answer,) = await fake.wait_for(
        "answerCallbackQuery",
        timeout=15,
        predicate=lambda c: str(c.params.get("callback_query_id")) == query_id,
    )
    return str(answer.params.get("text", ""))


def card_text(fake: FakeBotApi, message_id: int) -> str:
    """The card as the group sees it now (edits applied)."""
    for message in fake.chat_messages(COORDINATORS):
        if message["message_id"] == message_id:
            return str(message.get("text", ""))
    raise AssertionError("card not found")


async def test_invite_take_ask_answer_close_and_the_reporter_hears(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    aida = await join_team(fake, AIDA, "Aida")
    reporter = Person(fake, 730)
    await walk_to_review(fake, reporter)
    await reporter.tap("submit")
    (card,) = await fake.wait_for(
        "sendMessage", chat_id=COORDINATORS, timeout=15, predicate=lambda c: "reply_markup" in c.params
    )
    card_id = card.result["message_id"]
    code = re.search(r"R-\w{5}", card.params["text"]).group(0)  # type: ignore[union-attr]
    await reporting_bot.quiet(fake)  # the card's message id is recorded when its outcome is written

    assert await press_card(fake, AIDA, f"t:{code}:take", card_id) == T.text(
        "en", "triage.done_take", code=code
    )
    await fake.wait_for("editMessageText", chat_id=COORDINATORS, timeout=15)
    assert "in progress — Aida" in card_text(fake, card_id)
    taken = await fake.wait_for(
        "sendMessage",
        chat_id=reporter.user_id,
        timeout=15,
        predicate=lambda c: "being looked into" in c.params["text"],
    )
    assert "Aida" not in taken[0].params["text"]

    # A plain reply to the card is a question to the reporter, who never learns who asked.
    await group_reply(fake, AIDA, "Which police station were they taken to?", card_id)
    (question,) = await fake.wait_for(
        "sendMessage",
        chat_id=reporter.user_id,
        timeout=15,
        predicate=lambda c: "Which police station" in c.params["text"],
    )
    assert question.params["reply_markup"]["force_reply"] is True
    assert "Aida" not in question.params["text"] and str(AIDA) not in json.dumps(question.params)
    await fake.wait_for(
        "sendMessage",
        chat_id=COORDINATORS,
        timeout=15,
        predicate=lambda c: c.params["text"] == T.text("en", "contact.asked", code=code),
    )

    # The reporter answers by replying; it comes back threaded to the card, without their name or id.
    fake.add_message(
        user_id=reporter.user_id,
        text="Oktyabrsky district station",
        reply_to_message_id=question.result["message_id"],
    )
    (relayed,) = await fake.wait_for(
        "sendMessage",
        chat_id=COORDINATORS,
        timeout=15,
        predicate=lambda c: "Oktyabrsky district station" in c.params["text"],
    )
    assert relayed.params["reply_parameters"]["message_id"] == card_id
    assert str(reporter.user_id) not in json.dumps(relayed.params) and "Test" not in relayed.params["text"]
    await fake.wait_for(
        "sendMessage",
        chat_id=reporter.user_id,
        timeout=15,
        predicate=lambda c: c.params["text"] == T.text("en", "contact.answer_passed", code=code),
    )

    assert await press_card(fake, AIDA, f"t:{code}:close", card_id) == T.text(
        "en", "triage.done_close", code=code
    )
    await fake.wait_for(
        "sendMessage",
        chat_id=reporter.user_id,
        timeout=15,
        predicate=lambda c: "has been closed" in c.params["text"],
    )
    await fake.wait_for("editMessageText", chat_id=COORDINATORS, count=2, timeout=15)
    assert "closed" in card_text(fake, card_id)

    # /r shows the conversation; after /forget the reporter can no longer be reached.
    await aida.say(f"/r {code}")
    shown = "\n".join(m["text"] for m in aida.bot_messages() if "text" in m)
    assert "Which police station" in shown and "Oktyabrsky district station" in shown
    await fake.wait_for("sendDocument", chat_id=AIDA, count=2, timeout=15)  # evidence from the store
    await reporter.say("/forget")
    await reporter.tap("yes", prefix="forget")
    reply = await aida.say(f"/ask {code} Are you safe?")
    assert reply["text"] == T.text("en", "contact.unreachable", code=code)


async def test_two_coordinators_pressing_take_at_once(fake: FakeBotApi, reporting_bot: RunningBot) -> None:
    await join_team(fake, AIDA, "Aida")
    await join_team(fake, BEK, "Bek")
    reporter = Person(fake, 731)
    await walk_to_review(fake, reporter)
    await reporter.tap("submit")
    (card,) = await fake.wait_for(
        "sendMessage", chat_id=COORDINATORS, timeout=15, predicate=lambda c: "reply_markup" in c.params
    )
    code = re.search(r"R-\w{5}", card.params["text"]).group(0)  # type: ignore[union-attr]
    answers = await asyncio.gather(
        press_card(fake, AIDA, f"t:{code}:take", card.result["message_id"]),
        press_card(fake, BEK, f"t:{code}:take", card.result["message_id"]),
    )
    done = T.text("en", "triage.done_take", code=code)
    assert answers.count(done) == 1
    loser = answers[1 - answers.index(done)]
    winner = "Aida" if answers[0] == done else "Bek"
    assert loser == T.text("en", "triage.taken_by", code=code, who=winner)
    services = reporting_bot.app_services()
    async with services.db.read() as conn:
        rows = (await conn.execute(text("SELECT action FROM report_events"))).scalars().all()
    assert rows == ["take"]


async def test_a_filtered_export_reaches_the_admin_as_csv_and_json(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    admin = Person(fake, ADMIN)
    await admin.say("/help")  # the bot is up
    services = reporting_bot.app_services()
    codes = await seed_reports(
        services.db,
        services.cipher,
        [Seed(category="detention"), Seed(category="threats"), Seed(category="detention", region="osh_city")],
        services.clock.now(),
    )
    fake.add_message(user_id=ADMIN, text="/export category=detention")
    documents = await fake.wait_for("sendDocument", chat_id=ADMIN, count=2, timeout=20)
    files = {call.params["document"].filename: call.params["document"].content for call in documents}
    csv_name = next(name for name in files if name.endswith(".csv"))
    json_name = next(name for name in files if name.endswith(".json"))
    rows = list(csv.DictReader(io.StringIO(files[csv_name].decode())))
    assert [r["code"] for r in rows] == [codes[0], codes[2]]
    assert [d["code"] for d in json.loads(files[json_name])] == [codes[0], codes[2]]
    assert admin.bot_messages()  # the progress note came first
    # Not for coordinators: refused, and nothing sent.
    await join_team(fake, AIDA, "Aida")
    reply = await Person(fake, AIDA).say("/export")
    assert reply["text"] == T.text("en", "coord.admin_only")
    assert len(fake.sent("sendDocument", chat_id=AIDA)) == 0


async def jarchy(settings: Settings, *args: str) -> tuple[int, str]:
    """Run the real `jarchy` command line on the data; return its exit code and output."""
    return await run_jarchy(settings, *args)


async def test_audit_verify_detects_a_tampered_row(
    fake: FakeBotApi, reporting_bot: RunningBot, report_settings: Settings
) -> None:
    await join_team(fake, AIDA, "Aida")
    await Person(fake, 999).say("/reports")  # a stranger: refused, and that is audited too
    await reporting_bot.stop()
    code, output = await jarchy(report_settings, "audit", "verify")
    assert code == 0 and "intact" in output, output
    db = Database.connect(report_settings.database_url)
    try:
        async with db.write() as conn:
            actions = (await conn.execute(text("SELECT action FROM audit_log ORDER BY id"))).scalars().all()
            assert actions[:4] == ["audit.start", "team.invite", "team.join", "team.name"]
            assert actions[-1] == "desk.filter"
            await conn.execute(text("UPDATE audit_log SET actor = 'someone-else' WHERE id = 3"))
    finally:
        await db.close()
    code, output = await jarchy(report_settings, "audit", "verify")
    assert code == 1 and "entry 3 was altered" in output, output
    await reporting_bot.start()
