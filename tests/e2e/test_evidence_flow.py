"""Evidence through the real bot: quotas and the free-space floor refuse politely and leave nothing on disk,
an SOS and a text report still go through at the floor, and /r and exports catch a moved or edited file."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from bot.services.desk.export import UNBOUND_MARK
from messages import catalogs
from storage.database import Database
from tests.e2e.reporting import report_settings, reporting_bot
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings

__all__ = ["report_settings", "reporting_bot"]  # fixtures used by these tests

T = catalogs()
KB = 1024


async def walk_to_evidence(fake: FakeBotApi, person: Person, story: str = "Detained at a picket.") -> None:
    """Walk the guided report the shortest way to the evidence step."""
    fake.add_message(user_id=person.user_id, text="/report")
    await fake.wait_for("sendMessage", chat_id=person.user_id, timeout=15)
    await person.tap("cat", "detention")
    await person.tap("when", "now")
    await person.tap("region", "bishkek")
    await person.tap("skip")
    await person.say(story)
    await person.tap("skip")


async def send_file(fake: FakeBotApi, person: Person, content: bytes, name: str = "file.pdf") -> str:
    """Send a document at the evidence step; return the text of the bot's answer."""
    reply = await person.say(document_file_id=fake.add_file(content, file_name=name), timeout=30)
    return str(reply["text"])


async def submit(person: Person) -> None:
    """Finish the evidence step, stay anonymous and submit."""
    await person.tap("done")
    await person.tap("contact", "no")
    await person.tap("submit")


def stored_files(bot: RunningBot) -> list[Path]:
    directory = bot.settings.data_dir / "evidence"
    return sorted(directory.iterdir()) if directory.exists() else []


async def test_quotas_refuse_politely_and_leave_nothing_on_disk(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_url=fake.url, coordinator_chat_id=COORDINATORS, evidence_per_person_mb=1
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        person = Person(fake, 801)
        await walk_to_evidence(fake, person)
        first = await send_file(fake, person, b"a" * (700 * KB))
        assert T.text("en", "report.step.evidence", count=1) in first
        refused = await send_file(fake, person, b"b" * (700 * KB))
        assert refused.startswith(T.text("en", "evidence.person_quota", limit=1))
        too_big = await send_file(fake, person, b"c" * (21 * 1024 * KB), name="video.mp4")
        assert too_big.startswith(T.text("en", "report.file_too_big", limit=20))
        assert len(stored_files(bot)) == 1
        # Only the accepted file was downloaded; the others were refused before a byte came.
        assert len(fake.sent("downloadFile")) == 1
        await submit(person)
        await fake.wait_for("sendDocument", chat_id=COORDINATORS, timeout=15)
        assert len(fake.sent("sendDocument", chat_id=COORDINATORS)) == 1
    finally:
        await bot.stop()


async def test_at_the_disk_floor_sos_and_text_reports_still_get_through(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    # A floor above any disk's size: the evidence store sees the disk as full, the database does not.
    settings = make_settings(
        tmp_path, api_url=fake.url, coordinator_chat_id=COORDINATORS, disk_floor_mb=1024**3
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        sos = Person(fake, 811)
        fake.add_message(user_id=sos.user_id, text="/sos")
        await fake.wait_for("sendMessage", chat_id=sos.user_id, timeout=15)
        await sos.tap("go", prefix="s")
        (alert,) = await fake.wait_for(
            "sendMessage", chat_id=COORDINATORS, timeout=15, predicate=lambda c: "SOS" in c.params["text"]
        )
        assert "R-" in alert.params["text"]

        person = Person(fake, 812)
        await walk_to_evidence(fake, person, story="Searched at the border without a warrant.")
        refused = await send_file(fake, person, b"%PDF-1.4 a search record")
        assert refused.startswith(T.text("en", "evidence.disk_full"))
        assert stored_files(bot) == []
        assert fake.sent("downloadFile") == []
        await submit(person)
        await fake.wait_for(
            "sendMessage",
            chat_id=COORDINATORS,
            timeout=15,
            predicate=lambda c: "without a warrant" in c.params["text"],
        )
    finally:
        await bot.stop()


async def test_a_moved_file_and_an_edited_row_are_caught_by_r_and_the_export(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    first, second = Person(fake, 821), Person(fake, 822)
    await walk_to_evidence(fake, first, story="First report.")
    await send_file(fake, first, b"%PDF-1.4 first report, file one")
    await send_file(fake, first, b"%PDF-1.4 first report, file two")
    await submit(first)
    await walk_to_evidence(fake, second, story="Second report.")
    await send_file(fake, second, b"%PDF-1.4 second report, its own file")
    await submit(second)
    await fake.wait_for("sendDocument", chat_id=COORDINATORS, count=3, timeout=15)
    await reporting_bot.quiet(fake)

    db = Database.connect(reporting_bot.settings.database_url)
    try:
        async with db.write() as conn:
            (_, a_code), (b_id, b_code) = (
                await conn.execute(text("SELECT id, code FROM reports ORDER BY id"))
            ).all()
            rows = (await conn.execute(text("SELECT uid, sha256 FROM evidence ORDER BY id"))).all()
            moved, edited, own = rows[0], rows[1], rows[2]
            # Someone with the database moves the first report's file to the second, and edits another row.
            await conn.execute(
                text("UPDATE evidence SET report_id = :b WHERE uid = :u"), {"b": b_id, "u": moved[0]}
            )
            await conn.execute(text("UPDATE evidence SET kind = 'photo' WHERE uid = :u"), {"u": edited[0]})
    finally:
        await db.close()

    admin = Person(fake, ADMIN)
    await admin.say(f"/r {b_code}")
    warning = T.text("en", "evidence.moved", index=1, total=2, sha256=moved[1])
    await fake.wait_for(
        "sendMessage", chat_id=ADMIN, timeout=15, predicate=lambda c: c.params["text"] == warning
    )
    await fake.wait_for("sendDocument", chat_id=ADMIN, count=1, timeout=15)
    await reporting_bot.quiet(fake)
    sent = fake.sent("sendDocument", chat_id=ADMIN)
    assert [call.params["document"].content for call in sent] == [b"%PDF-1.4 second report, its own file"]

    await admin.say(f"/r {a_code}")
    warning = T.text("en", "evidence.moved", index=1, total=1, sha256=edited[1])
    await fake.wait_for(
        "sendMessage", chat_id=ADMIN, timeout=15, predicate=lambda c: c.params["text"] == warning
    )
    await reporting_bot.quiet(fake)
    assert len(fake.sent("sendDocument", chat_id=ADMIN)) == 1  # the edited one was not sent

    fake.add_message(user_id=ADMIN, text="/export")
    documents = await fake.wait_for("sendDocument", chat_id=ADMIN, count=3, timeout=20)
    exported = next(call for call in documents if call.params["document"].filename.endswith(".json"))
    by_code = {r["code"]: r["evidence_sha256"] for r in json.loads(exported.params["document"].content)}
    assert by_code[a_code] == [f"{edited[1]} {UNBOUND_MARK}"]
    assert by_code[b_code] == [f"{moved[1]} {UNBOUND_MARK}", own[1]]
