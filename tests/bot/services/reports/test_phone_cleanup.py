"""A seized phone keeps nothing that names a report for long, and never the code coordinators see.

End to end over the fake Bot API on a clock the test moves: the receipt, a status update, an SOS screen
and a /myreports answer are deleted from the reporter's chat once the keep time has passed, not before;
the deletion survives a restart; an anonymous report's deletion row cannot be joined to its author's other
rows; the reporter sees only K- codes and coordinators only R- codes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from bot.app import build_application
from bot.runner import run_polling
from bot.security import DataKey
from bot.security.bindings import payload_binding
from bot.services.reports.intake import ReporterCodes, find_reporter_code
from bot.settings import Settings, SettingsError
from bot.wiring import Services
from messages import catalogs
from storage.schema import outbox
from tests.conftest import make_settings
from tests.e2e.conftest import fake
from tests.e2e.reporting import ADMIN, COORDINATORS, Person
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot

__all__ = ["fake"]  # the fixture these tests use

R_CODE = re.compile(r"R-[0-9A-Z]{5}")
K_CODE = re.compile(r"K-[0-9A-Z]{5}")
KEEP_H = 0.25  # shorter than an SOS follow-up (30 min): its timed deletion, not the draft's end, is seen


class ShiftedClock:
    """The real clock plus an offset the test moves: the bot runs at its pace, and hours pass at once."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> datetime:
        """Return the shifted current time in UTC."""
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def monotonic(self) -> float:
        """Return the shifted monotonic time."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass at once."""
        self._offset += seconds


class ClockedBot(RunningBot):
    """The running bot on a clock the test moves (kept across restarts)."""

    def __init__(self, settings: Settings, clock: ShiftedClock) -> None:
        super().__init__(settings)
        self.clock = clock

    async def start(self) -> None:
        """Start polling and delivering on the test's clock."""
        self._stop = asyncio.Event()
        self.app = build_application(self.settings, self.clock)
        self._task = asyncio.create_task(run_polling(self.settings, stop=self._stop, app=self.app))
        await asyncio.sleep(0)


async def clocked_bot(tmp_path: Path, fake: FakeBotApi, **settings: Any) -> ClockedBot:
    """Start a bot with an admin and a coordinators' chat on a clock of its own."""
    values = make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=COORDINATORS,
        **settings,
    )
    bot = ClockedBot(values, ShiftedClock())
    await bot.start()
    return bot


@pytest.fixture
async def short_keep_bot(tmp_path: Path, fake: FakeBotApi) -> AsyncIterator[ClockedBot]:
    """The bot with a keep time of a quarter of an hour."""
    bot = await clocked_bot(tmp_path, fake, phone_keep_hours=KEEP_H)
    yield bot
    await bot.stop()


@pytest.fixture
async def day_keep_bot(tmp_path: Path, fake: FakeBotApi) -> AsyncIterator[ClockedBot]:
    """The bot with the default keep time (a day)."""
    bot = await clocked_bot(tmp_path, fake)
    yield bot
    await bot.stop()


async def submit_report(fake: FakeBotApi, person: Person, *, contactable: bool) -> int:
    """Walk a short report without evidence and submit it; return the receipt's message id."""
    await person.say("/report")
    for action, arg in (("cat", "threats"), ("when", "now"), ("region", "chui"), ("skip", "")):
        await person.tap(action, arg)
    await person.say("They phoned my mother twice last night.")
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", "yes" if contactable else "no")
    receipt = person.keyboard_message()["message_id"]
    await person.tap("submit")
    return int(receipt)


async def newest_card(fake: FakeBotApi, count: int) -> tuple[str, int]:
    """Wait for the `count`-th report card in the coordinators' chat; return its code and message id."""
    calls = await fake.wait_for(
        "sendMessage",
        chat_id=COORDINATORS,
        count=count,
        timeout=15,
        predicate=lambda c: "reply_markup" in c.params and R_CODE.search(c.params["text"]) is not None,
    )
    card = calls[count - 1]
    match = R_CODE.search(card.params["text"])
    assert match is not None
    return match.group(0), int(card.result["message_id"])


async def take(fake: FakeBotApi, code: str, card_id: int) -> None:
    """An admin takes the report on its card."""
    update = fake.add_callback_query(
        user_id=ADMIN, data=f"t:{code}:take", message_id=card_id, chat_id=COORDINATORS, chat_type="supergroup"
    )
    query_id = str(update["callback_query"]["id"])
    await fake.wait_for(
        "answerCallbackQuery", timeout=15, predicate=lambda c: str(c.params["callback_query_id"]) == query_id
    )


async def status_update(fake: FakeBotApi, user_id: int) -> tuple[str, int]:
    """Wait for the "being looked into" update; return its text and message id."""
    (update,) = await fake.wait_for(
        "sendMessage",
        chat_id=user_id,
        timeout=15,
        predicate=lambda c: "being looked into" in str(c.params.get("text")),
    )
    return str(update.params["text"]), int(update.result["message_id"])


async def my_reports(fake: FakeBotApi, user_id: int) -> tuple[str, list[int]]:
    """Send /myreports; return the answer's text and the ids of the command and the answer."""
    header = catalogs().text("en", "myreports.header")
    command = fake.add_message(user_id=user_id, text="/myreports")["message"]["message_id"]
    (answer,) = await fake.wait_for(
        "sendMessage", chat_id=user_id, timeout=15, predicate=lambda c: header in str(c.params.get("text"))
    )
    return str(answer.params["text"]), [int(command), int(answer.result["message_id"])]


async def queued_deletions(services: Services) -> list[dict[str, Any]]:
    """Every pending clean-up row with its decrypted parameters."""
    columns = ("uid", "payload", "chat_key", "recipient", "ref", "dedupe_key", "due_at")
    pending = (outbox.c.kind == "cleanup") & (outbox.c.status == "pending")
    async with services.db.read() as conn:
        rows = (await conn.execute(select(*(outbox.c[name] for name in columns)).where(pending))).all()
    return [
        {
            **row._asdict(),
            "params": services.cipher.decrypt_json(row.payload, binding=payload_binding(row.uid)),
        }
        for row in rows
    ]


async def wait_queued(services: Services, chat_id: int, message_id: int, timeout: float = 10.0) -> None:
    """Wait until the deletion of a message is queued (a status update's comes with its send's outcome)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = await queued_deletions(services)
        if any(
            r["params"]["chat_id"] == chat_id and message_id in r["params"]["message_ids"] for r in queued
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no deletion of {message_id} queued")


def deletions_since(fake: FakeBotApi, chat_id: int, since: int) -> set[int]:
    """Ids the bot asked to delete from a chat in calls after the first `since` calls."""
    ids: set[int] = set()
    for call in fake.calls[since:]:
        if call.ok and call.params.get("chat_id") == chat_id:
            if call.method == "deleteMessages":
                ids |= {int(i) for i in call.params["message_ids"]}
            elif call.method == "deleteMessage":
                ids.add(int(call.params["message_id"]))
    return ids


async def wait_deleted(
    fake: FakeBotApi, chat_id: int, ids: set[int], since: int, timeout: float = 15
) -> None:
    """Wait until every id was deleted from the chat in calls after `since`."""
    deadline = time.monotonic() + timeout
    while not ids <= deletions_since(fake, chat_id, since):
        if time.monotonic() > deadline:
            raise AssertionError(f"{ids - deletions_since(fake, chat_id, since)} not deleted")
        await asyncio.sleep(0.05)


def texts_to(fake: FakeBotApi, chat_id: int) -> list[str]:
    """Every text and caption the bot sent or edited in a chat."""
    return [
        str(call.params.get("text") or call.params.get("caption") or "")
        for call in fake.calls
        if call.ok and call.params.get("chat_id") == chat_id
    ]


def only(pattern: re.Pattern[str], texts: list[str]) -> set[str]:
    """The distinct codes of one kind in some texts."""
    return {code for value in texts for code in pattern.findall(value)}


async def test_what_names_a_report_leaves_the_phone_after_the_keep_time_and_not_before(
    fake: FakeBotApi, short_keep_bot: ClockedBot
) -> None:
    person = Person(fake, 901)
    texts = catalogs()

    receipt_id = await submit_report(fake, person, contactable=True)
    services, clock = short_keep_bot.app_services(), short_keep_bot.clock
    receipt = fake.sent("editMessageText", chat_id=901)[-1].params["text"]
    assert texts.text("en", "report.receipt_vanishes", hours="0.25") in receipt
    code, card_id = await newest_card(fake, 1)
    shown = services.reports.reporter_code(code)
    assert find_reporter_code(receipt) == shown
    await fake.wait_for("deleteMessages", chat_id=901, timeout=15)  # the conversation, at once

    await take(fake, code, card_id)
    update_text, update_id = await status_update(fake, 901)
    assert shown in update_text
    await wait_queued(services, 901, update_id)

    listing, listing_ids = await my_reports(fake, 901)
    assert shown in listing

    await person.say("/sos")
    sos_screen = int(person.keyboard_message()["message_id"])
    await person.tap("go", prefix="s")
    sos_code, _ = await newest_card(fake, 2)
    sos_text = next(m["text"] for m in person.bot_messages() if m["message_id"] == sos_screen)
    assert find_reporter_code(sos_text) == services.reports.reporter_code(sos_code)
    await short_keep_bot.quiet(fake)

    # Coordinators see only R- codes, never the reporter's; the reporter never sees an R- code.
    to_coordinators, to_reporter = texts_to(fake, COORDINATORS), texts_to(fake, 901)
    assert {code, sos_code} <= only(R_CODE, to_coordinators)
    assert not only(K_CODE, to_coordinators)
    assert not only(R_CODE, to_reporter)
    assert only(K_CODE, to_reporter) == {shown, services.reports.reporter_code(sos_code)}

    kept = {receipt_id, update_id, *listing_ids, sos_screen}
    on_phone = {m["message_id"] for m in fake.chat_messages(901)}
    assert kept <= on_phone
    since = len(fake.calls)

    clock.advance(KEEP_H * 3600 - 60)
    # Nothing is due yet, so the barrier would pass at once: give the worker, which looks for due rows at
    # least twice a second, a few looks to prove it does not jump the keep time.
    await asyncio.sleep(2.0)
    assert not deletions_since(fake, 901, since), "deleted before the keep time"

    clock.advance(120)
    await wait_deleted(fake, 901, kept, since)
    await short_keep_bot.quiet(fake)
    assert deletions_since(fake, 901, since) == kept  # exactly those, nothing else of the chat
    assert not kept & {m["message_id"] for m in fake.chat_messages(901)}


async def test_an_anonymous_receipts_deletion_is_unlinked_and_survives_a_restart(
    fake: FakeBotApi, day_keep_bot: ClockedBot
) -> None:
    person = Person(fake, 902)
    # A contactable report first: its status update is a row keyed by the person's chat.
    await submit_report(fake, person, contactable=True)
    services = day_keep_bot.app_services()
    code, card_id = await newest_card(fake, 1)
    await take(fake, code, card_id)
    _, update_id = await status_update(fake, 902)
    await wait_queued(services, 902, update_id)

    receipt_id = await submit_report(fake, person, contactable=False)
    await newest_card(fake, 2)  # the report exists, and with it its receipt's deletion
    await day_keep_bot.quiet(fake)

    async with services.db.read() as conn:
        rows = (await conn.execute(text("SELECT uid, chat_key FROM outbox"))).all()
    (deletion,) = [r for r in await queued_deletions(services) if r["params"]["message_ids"] == [receipt_id]]
    others = {row.chat_key for row in rows if row.uid != deletion["uid"]}
    # The status update (sent, its payload gone) is a row keyed by the person's chat: the test can tell.
    assert services.pseudonyms.of_chat(902) in others
    assert deletion["chat_key"] not in others
    assert deletion["chat_key"] != services.pseudonyms.of_user(902)
    assert (deletion["recipient"], deletion["ref"], deletion["dedupe_key"]) == (None, None, None)
    expected = day_keep_bot.clock.now() + timedelta(hours=24)
    assert abs((deletion["due_at"] - expected).total_seconds()) < 120

    await day_keep_bot.restart()
    since = len(fake.calls)
    day_keep_bot.clock.advance(24 * 3600 + 60)
    await wait_deleted(fake, 902, {receipt_id, update_id}, since)
    assert receipt_id not in {m["message_id"] for m in fake.chat_messages(902)}


async def test_a_question_shows_the_reporters_code_and_the_reply_still_arrives(
    fake: FakeBotApi, short_keep_bot: ClockedBot
) -> None:
    person = Person(fake, 903)
    await submit_report(fake, person, contactable=True)
    services = short_keep_bot.app_services()
    code, _ = await newest_card(fake, 1)
    fake.add_message(
        user_id=ADMIN, chat_id=COORDINATORS, chat_type="supergroup", text=f"/ask {code} Which station?"
    )
    (question,) = await fake.wait_for(
        "sendMessage", chat_id=903, timeout=15, predicate=lambda c: "Which station?" in c.params["text"]
    )
    assert services.reports.reporter_code(code) in question.params["text"]
    assert code not in question.params["text"]
    await wait_queued(services, 903, question.result["message_id"])  # unanswered, it would go too

    fake.add_message(user_id=903, text="Oktyabrsky", reply_to_message_id=question.result["message_id"])
    (relayed,) = await fake.wait_for(
        "sendMessage", chat_id=COORDINATORS, timeout=15, predicate=lambda c: "Oktyabrsky" in c.params["text"]
    )
    assert code in relayed.params["text"]
    passed = catalogs().text("en", "contact.answer_passed")
    await fake.wait_for(
        "sendMessage", chat_id=903, timeout=15, predicate=lambda c: c.params["text"] == passed
    )
    assert not only(R_CODE, texts_to(fake, 903))


def test_reporter_codes_are_keyed_and_resolve_only_among_the_given_reports(tmp_path: Path) -> None:
    codes, other = ReporterCodes(DataKey(b"k" * 32)), ReporterCodes(DataKey(b"o" * 32))
    shown = codes.of("R-7K3QX")
    assert K_CODE.fullmatch(shown) and shown == codes.of("R-7K3QX")
    assert shown != other.of("R-7K3QX") and shown != codes.of("R-7K3QY")
    assert codes.resolve(shown.lower(), ["R-22222", "R-7K3QX"]) == "R-7K3QX"
    assert codes.resolve(shown, ["R-22222"]) is None
    assert find_reporter_code(f"Update on your report <code>{shown}</code>: closed") == shown
    assert find_reporter_code("R-7K3QX") is None


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 24.0), ("12", 12.0), ("0.5", 0.5), ("47", 47.0), ("48", None), ("0", None)]
)
def test_the_keep_time_stays_within_telegrams_deletion_window(
    raw: str | None, expected: float | None
) -> None:
    env = {"JARCHY_BOT_TOKEN": "123456:ABCDEFGHIJKLMNOP"}
    if raw is not None:
        env["JARCHY_PHONE_KEEP_HOURS"] = raw
    if expected is None:
        with pytest.raises(SettingsError) as refused:
            Settings.from_env(env, env_file=Path("/nonexistent/.env"))
        assert refused.value.variable == "JARCHY_PHONE_KEEP_HOURS"
    else:
        assert Settings.from_env(env, env_file=Path("/nonexistent/.env")).phone_keep_hours == expected
