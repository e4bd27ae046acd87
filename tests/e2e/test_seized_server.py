"""A seized server: after a person files a contactable and an anonymous report, the disk (database, WAL,
SHM and, where a loop-mounted ext4 image can be made, the raw file system) shows no canary in clear and no
value that ties the anonymous report to them, with or without the key."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from bot.security import Pseudonymizer
from bot.security.keys import create_key_file, read_key_file
from bot.security.transient import TransientKeys
from bot.wiring import TRANSIENT_KEYS_FILE
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings

# It reads the SQLite file, its WAL and SHM, and the file system under them: PostgreSQL's files live
# in its own cluster (what it keeps of old rows is in the README's security model).
pytestmark = pytest.mark.sqlite_only("reads the bytes of the SQLite file, its WAL and the file system")

REPORTER = 4242


async def _file_report(
    fake: FakeBotApi,
    person: Person,
    *,
    story: str,
    place: str,
    contact: str,
    before_submit: Callable[[], Awaitable[None]] | None = None,
) -> tuple[str, str]:
    """Walk a text-only report and submit it; return the code on its alert card and the draft's nonce."""
    await person.say("/report")
    await person.tap("cat", "detention")
    await person.tap("when", "type")
    yesterday = (datetime.now(ZoneInfo("Asia/Bishkek")) - timedelta(days=1)).strftime("%d.%m.%Y")
    await person.say(f"{yesterday} 14:30")
    await person.tap("region", "elsewhere")
    await person.say(place)
    await person.say(location=(42.874612, 74.612345))
    await person.say(story)
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", contact)
    cards_before = len(_cards(fake))
    nonce = _submit_nonce(person)
    if before_submit is not None:
        await before_submit()
    await person.tap("submit")
    cards = await fake.wait_for(
        "sendMessage", chat_id=COORDINATORS, count=cards_before + 1, timeout=20, predicate=_is_card
    )
    found = re.search(r"R-\w{5}", cards[-1].params["text"])
    assert found is not None
    return found.group(0), nonce


async def _owner_column(running: RunningBot, user_id: int) -> None:
    """The open draft's row names its owner by a tag: an old copy of it would not name them."""
    services = running.app_services()
    async with services.db.read() as conn:
        owners = (await conn.execute(text("SELECT pseudonym, owner FROM drafts"))).all()
    assert owners, "the draft is open"
    for tag, sealed in owners:
        assert tag != services.pseudonyms.of_user(user_id) and sealed is not None


def _is_card(call: object) -> bool:
    return "reply_markup" in getattr(call, "params", {})


def _cards(fake: FakeBotApi) -> list[object]:
    return [c for c in fake.sent("sendMessage", chat_id=COORDINATORS) if _is_card(c)]


def _submit_nonce(person: Person) -> str:
    for data in person.buttons():
        parts = data.split(":")
        if parts[0] == "r" and parts[3] == "submit":
            return parts[2]
    raise AssertionError(f"no submit button in {person.buttons()}")


@contextlib.contextmanager
def _ext4(tmp_path: Path) -> Iterator[tuple[Path, Path] | None]:
    """Mount a small ext4 image; yield (image, mount point), or None where this machine cannot."""
    image, mount = tmp_path / "disk.img", tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        yield None
        return
    with open(image, "wb") as handle:
        handle.truncate(48 * 1024 * 1024)
    mounted = (
        _run("mkfs.ext4", "-q", "-F", str(image)) == 0
        and _run("mount", "-o", "loop", str(image), str(mount)) == 0
    )
    if not mounted:
        yield None
        return
    try:
        yield image, mount
    finally:
        _run("umount", str(mount))


def _run(tool: str, *args: str) -> int:
    path = shutil.which(tool)
    if path is None:
        return 127
    return subprocess.run([path, *args], capture_output=True, check=False).returncode  # noqa: S603


def _unmount(mount: Path) -> None:
    os.sync()
    assert _run("umount", str(mount)) == 0


async def test_a_seized_disk_links_no_anonymous_report_to_its_author(
    tmp_path: Path, fake: FakeBotApi
) -> None:
    with _ext4(tmp_path) as disk:
        data_dir = disk[1] / "data" if disk is not None else tmp_path / "data"
        settings = make_settings(
            tmp_path,
            api_url=fake.url,
            admin_ids=frozenset({ADMIN}),
            coordinator_chat_id=COORDINATORS,
            data_dir=data_dir,
            key_file=tmp_path / "keys" / "jarchy.key",
        )
        # E is the person's safety word: shown on both reviews, the anonymous one's too.
        canaries = {name: f"CANARY{name}{secrets.token_hex(6)}" for name in "ABCDE"}
        create_key_file(settings.resolved_key_file)
        running = RunningBot(settings)
        await running.start()
        person = Person(fake, REPORTER)
        try:
            await person.say(f"/safeword {canaries['E']}")
            await fake.wait_for("deleteMessages", chat_id=person.user_id, timeout=20)
            _, nonce_a = await _file_report(
                fake, person, story=f"named {canaries['A']}", place=f"at {canaries['B']}", contact="yes"
            )
            services = running.app_services()
            keys = services.cipher.transient_keys
            assert keys is not None
            before: dict[str, Any] = {}

            async def before_anonymous_submit() -> None:
                await _owner_column(running, REPORTER)
                # Every update of the walk is sealed under this epoch or an earlier one. Read before the
                # press: the scrub the submit asks for may retire it (1 s later) before the card is seen.
                before["epoch"] = keys.current
                before["slots"] = (data_dir / TRANSIENT_KEYS_FILE).read_bytes()

            anonymous_code, nonce_c = await _file_report(
                fake,
                person,
                story=f"saw {canaries['C']}",
                place=f"in {canaries['D']}",
                contact="no",
                before_submit=before_anonymous_submit,
            )
            sealed_under, slots_then = before["epoch"], before["slots"]
            async with services.db.read() as conn:
                found = await conn.execute(
                    text("SELECT created_at, submit_key FROM reports WHERE code = :c"), {"c": anonymous_code}
                )
                anonymous_at, anonymous_submit_key = found.one()
            reviews = [c for c in fake.sent(chat_id=person.user_id) if "Check your report" in str(c.params)]
            assert len(reviews) >= 2 and all(canaries["E"] in str(c.params) for c in reviews)
            await fake.wait_for("deleteMessages", chat_id=person.user_id, count=3, timeout=20)
            # The scrub that follows an anonymous report runs by itself, or at the latest when the bot stops.
            await running.quiet(fake)
        finally:
            await running.stop()

        key = read_key_file(settings.resolved_key_file)
        pseudonyms = Pseudonymizer(key)
        person_values = {pseudonyms.of_user(REPORTER), pseudonyms.of_chat(REPORTER)}
        blobs = {p.name: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
        assert "jarchy.db" in blobs and TRANSIENT_KEYS_FILE in blobs
        if disk is not None:
            _unmount(disk[1])
            blobs["the raw ext4 image"] = disk[0].read_bytes()

        # Without the key: no canary in clear anywhere, not in the WAL, not in free blocks.
        for where, content in blobs.items():
            for canary in canaries.values():
                assert canary.encode() not in content, f"{canary} in clear in {where}"

        copy = tmp_path / "copy.db"
        copy.write_bytes(blobs["jarchy.db"])
        db = sqlite3.connect(copy)
        try:
            anonymous = db.execute("SELECT * FROM reports WHERE code = ?", (anonymous_code,)).fetchone()
            assert anonymous is not None and not person_values & set(anonymous)
            # Nothing derived from the draft's nonce, which sat in clear beside the pseudonym.
            assert anonymous_submit_key not in {pseudonyms.of_submission(n) for n in (nonce_a, nonce_c)}
            assert anonymous_submit_key != nonce_c
            # No rate-limit row with the pseudonym and the report's exact time.
            assert db.execute("SELECT count(*) FROM user_actions WHERE action = 'report'").fetchone() == (0,)
            # The clean-up rows written with the anonymous report carry a random chat key.
            cleanups = db.execute(
                "SELECT chat_key, recipient FROM outbox"
                " WHERE kind = 'cleanup' AND created_at BETWEEN ? AND ?",
                (anonymous_at, anonymous_at + 1_000_000),
            ).fetchall()
            assert cleanups
            for chat_key, recipient in cleanups:
                assert chat_key not in person_values and recipient is None
            keyed = db.execute("SELECT chat_key FROM outbox WHERE chat_key = ?", (cleanups[0][0],)).fetchall()
            assert len(keyed) == 1  # joins no other row
            assert db.execute("SELECT count(*) FROM drafts").fetchone() == (0,)
            # Scrubs ran while rows were in flight: none of them was lost to a retired key.
            assert db.execute("SELECT count(*) FROM outbox WHERE status = 'dead'").fetchone() == (0,)
        finally:
            db.close()
        for where, content in blobs.items():
            assert nonce_c.encode() not in content or where != "jarchy.db", where

        # With the key: the epoch keys that sealed the anonymous report's updates and draft were overwritten
        # in place, so their copies in old WAL frames or free blocks no longer decrypt.
        assert all(epoch > sealed_under for epoch in TransientKeys(_keys_copy(tmp_path, blobs), key).epochs())
        old_slots = [
            slots_then[i : i + 76] for i in range(0, len(slots_then), 76) if any(slots_then[i : i + 76])
        ]
        assert old_slots
        for where, content in blobs.items():
            for slot in old_slots:
                assert slot not in content, f"an old transient key slot survives in {where}"
        if disk is None:
            pytest.skip("no loop-mounted ext4 here (needs root and mkfs.ext4): the raw image was not checked")


def _keys_copy(tmp_path: Path, blobs: dict[str, bytes]) -> Path:
    path = tmp_path / "transient.copy"
    path.write_bytes(blobs[TRANSIENT_KEYS_FILE])
    return path
