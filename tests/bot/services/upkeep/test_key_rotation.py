"""`jarchy rotate-key` on data the real bot made: every value re-encrypted, resumable after kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import sys
from asyncio.subprocess import PIPE, STDOUT
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import LargeBinary, select

from bot.runtime.audit import AuditLog
from bot.runtime.clock import SystemClock
from bot.runtime.inbox import DispatchResult, DurableInbox
from bot.runtime.outbox import OutgoingMessage
from bot.security.bindings import draft_binding, staged_binding
from bot.security.crypto import Cipher
from bot.security.key_guard import KEY_CHECK, ROTATION
from bot.security.keys import (
    WRAPPED,
    DataKey,
    KeyFileError,
    Passphrase,
    key_check,
    read_key_file,
    write_key_file,
)
from bot.security.owner_tags import OwnerTags
from bot.security.sealed_fields import NOT_SEALED, SEALED_FIELDS, open_under, under_data_key
from bot.security.transient import TransientKeys
from bot.services.reports.evidence import EvidenceDamaged, EvidenceStore
from bot.services.upkeep.key_rotation import rotate_key
from bot.settings import Settings
from bot.wiring import TRANSIENT_KEYS_FILE, Services, build_limiter, open_services
from storage import schema
from storage.audit import AuditRepository
from storage.campaigns import CampaignRepository
from storage.database import Database
from storage.drafts import owner_binding
from storage.evidence import staged_owner_binding
from storage.state import StateRepository
from tests.campaign_seed import ready_campaign
from tests.conftest import TEST_TOKEN, make_settings
from tests.e2e.reporting import ADMIN, COORDINATORS, Person
from tests.e2e.test_reports import DOCUMENT, PHOTO, walk_to_review
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.workspace_seed import Seed, seed_reports

ROOT = Path(__file__).resolve().parents[4]
REPORTER, DRAFTER, SUBSCRIBER, FOLLOWER, LATE = 601, 602, 700, 701, 603
STORY = "Detained outside the Oktyabrsky court."
QUESTION = "Which officers? (asked while the bot was down)"
NOTE = "Lawyer called, NOTE-CANARY"
# Every column that holds values under the data key once the bot has run a while; the others of
# SEALED_FIELDS are sealed under transient keys (raw updates, drafts, staged evidence).
DATA_KEY_COLUMNS = {f.name for f in SEALED_FIELDS} - {
    "inbox.payload",
    "drafts.payload",
    "evidence_staged.details",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """A fake Telegram on 127.0.0.1."""
    async with FakeBotApi(TEST_TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def _restore_logging(restore_logging: None) -> None:
    """The command line's logging set-up is undone after each test (tests/conftest.py)."""


# ----------------------------------------------------------------------------------- data to rotate


async def populate(tmp_path: Path, fake: FakeBotApi, **overrides: object) -> tuple[Settings, str]:
    """Use the real bot the way people do, so every encrypted column holds something; return the code."""
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=COORDINATORS,
        **overrides,
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        reporter = Person(fake, REPORTER)
        await walk_to_review(fake, reporter, story=STORY)  # a photo and a document, contact: yes
        await reporter.tap("submit")
        await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)  # the card: an alert copy
        drafter = Person(fake, DRAFTER)
        fake.add_message(user_id=DRAFTER, text="/report")
        await fake.wait_for("sendMessage", chat_id=DRAFTER, timeout=15)
        await drafter.tap("cat", "detention")  # a draft left open
        services = bot.app_services()
        code = await _only_code(services)
        await services.team.set_name(ADMIN, "Aida")
        await services.duty.set(ADMIN, True)
        await services.desk.note(ADMIN, code, NOTE)
        await services.contact.ask(ADMIN, code, "Are you safe now?")
        for person in (SUBSCRIBER, FOLLOWER):
            await services.users.seen(person, "en")
        await services.safewords.choose(FOLLOWER, "blue river")
        # A backup bot the follower pressed Start in: their reach record (any bot id will do here).
        await services.backups.started(654321, FOLLOWER, "en")
        await services.campaigns.subscribe(SUBSCRIBER, SUBSCRIBER)
        case_id = await services.hearings.create_case(ADMIN, "Case of Aziza", "Detained", "Art. 330", True)
        await services.hearings.follow(FOLLOWER, FOLLOWER, case_id)
        campaign_id = await ready_campaign(services, ADMIN)
        async with services.db.write() as conn:
            now = services.clock.now()
            # Out already (as the broadcaster would leave it), with a deadline to be reminded of.
            await CampaignRepository().set(
                conn, campaign_id, now, status="sent", deadline=now + timedelta(days=3)
            )
        await services.campaigns.act(SUBSCRIBER, SUBSCRIBER, campaign_id, "remind")
        await bot.quiet(fake)
    finally:
        await bot.stop()
    # With the bot stopped: a question waiting in the outbox and an update waiting in the inbox.
    services = await _open(settings)
    try:
        await services.contact.ask(ADMIN, code, QUESTION)
        fake.add_message(user_id=LATE, text="/help")
        inbox = DurableInbox(
            db=services.db,
            repo=services.inbox_repo,
            api=services.api,
            cipher=services.cipher,
            clock=services.clock,
            dispatch=_never,
        )
        assert await inbox.fetch_once(timeout_s=0) >= 1
    finally:
        await services.close()
    return settings, code


async def populate_lightly(settings: Settings) -> None:
    """Data straight from the services, for the tests about key files rather than columns."""
    services = await _open(settings)
    try:
        chat = Seed(reporter=services.pseudonyms.of_user(REPORTER), chat=REPORTER)
        await seed_reports(services.db, services.cipher, [chat, Seed()], services.clock.now())
        message = OutgoingMessage("sendMessage", {"chat_id": REPORTER, "text": "queued"}, kind="test")
        async with services.db.write() as conn:
            await services.outbox.enqueue(conn, [message])
        await services.users.seen(SUBSCRIBER, "en")
        await services.campaigns.subscribe(SUBSCRIBER, SUBSCRIBER)
    finally:
        await services.close()


async def _never(update: dict[str, Any]) -> DispatchResult:
    raise AssertionError("nothing is dispatched here")


async def _open(settings: Settings) -> Services:
    clock = SystemClock()
    return await open_services(settings, clock, build_limiter(settings, clock))


async def _only_code(services: Services) -> str:
    async with services.db.read() as conn:
        return str((await conn.execute(select(schema.reports.c.code))).scalar_one())


# ------------------------------------------------------------------------------------- what it holds


Opened = dict[tuple[str, tuple[Any, ...]], tuple[str, bytes]]


def _tagged_bindings(cipher: Cipher, sealed: Any, row: Any) -> tuple[str, ...]:
    """A tagged draft or staged row is bound to its owner, opened from the seal beside the tag."""
    owners = OwnerTags(cipher)
    if sealed.name == "drafts.payload":
        owner = owners.open(row.owner, row.pseudonym, binding=owner_binding(row.pseudonym, row.kind))
        return (draft_binding(owner, row.kind, row.nonce),)
    if sealed.name == "evidence_staged.details":
        return (
            staged_binding(owners.open(row.owner_seal, row.owner, binding=staged_owner_binding(row.owner))),
        )
    return tuple(sealed.bindings(row))


async def open_everything(settings: Settings, key: DataKey) -> Opened:
    """Open every value of every sealed column under `key`: (column, row key) -> (kind, plaintext).

    Fails if a value opens under nothing, so it also proves the bindings of SEALED_FIELDS right.
    """
    plain, transient = Cipher(key), Cipher(key, TransientKeys(settings.data_dir / TRANSIENT_KEYS_FILE, key))
    opened: Opened = {}
    db = Database.connect(settings.database_url)
    try:
        async with db.read() as conn:
            for sealed in SEALED_FIELDS:
                for row in await conn.execute(sealed.page(None, 1_000_000)):
                    value, where = bytes(row.sealed), (sealed.name, sealed.key_of(row))
                    if under_data_key(value):
                        found, kind = open_under(plain, value, sealed.bindings(row)), "data"
                    elif Cipher.epoch_of(value) is not None:
                        found, kind = (
                            open_under(transient, value, _tagged_bindings(transient, sealed, row)),
                            "transient",
                        )
                    else:
                        found, kind = ("clear", value), "clear"  # staged evidence from before revision 0010
                    assert found is not None, f"{where} does not open under this key"
                    opened[where] = (kind, found[1])
    finally:
        await db.close()
    return opened


async def evidence_files(settings: Settings, key: DataKey) -> dict[str, bytes]:
    """Every evidence file, opened under `key`."""
    store = EvidenceStore(settings.data_dir / "evidence", key)
    uids = sorted(p.stem for p in (settings.data_dir / "evidence").glob("*.bin"))
    return {uid: await store.read(uid) for uid in uids}


async def under_old_key(settings: Settings, old: DataKey) -> int:
    """Count the data-key values that still open under the old key."""
    cipher, count = Cipher(old), 0
    db = Database.connect(settings.database_url)
    try:
        async with db.read() as conn:
            for sealed in SEALED_FIELDS:
                for row in await conn.execute(sealed.page(None, 1_000_000)):
                    value = bytes(row.sealed)
                    if under_data_key(value) and open_under(cipher, value, sealed.bindings(row)):
                        count += 1
    finally:
        await db.close()
    return count


def table_digest(settings: Settings, *tables: str) -> str:
    """Hash the rows of some tables, but for their sealed columns (a rotation re-encrypts those)."""
    digest = hashlib.sha256()
    sealed = {(f.table.name, f.column) for f in SEALED_FIELDS}
    with contextlib.closing(sqlite3.connect(settings.data_dir / "jarchy.db")) as raw:
        for table in tables:
            names = [
                r[1] for r in raw.execute(f'PRAGMA table_info("{table}")') if (table, r[1]) not in sealed
            ]
            columns = ", ".join(f'"{name}"' for name in names)
            query = f'SELECT {columns} FROM "{table}" ORDER BY rowid'  # noqa: S608
            digest.update(repr(raw.execute(query).fetchall()).encode())
    return digest.hexdigest()


def state_value(settings: Settings, name: str) -> str | None:
    """Return one bot_state value."""
    with contextlib.closing(sqlite3.connect(settings.data_dir / "jarchy.db")) as raw:
        row = raw.execute("SELECT value FROM bot_state WHERE key = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


async def audit_intact(settings: Settings, key: DataKey) -> bool:
    """Tell whether the audit chain verifies under `key`."""
    db = Database.connect(settings.database_url)
    try:
        return (await AuditLog(db, AuditRepository(), StateRepository(), key, SystemClock()).verify()).intact
    finally:
        await db.close()


async def the_bot_still_works(fake: FakeBotApi, settings: Settings, code: str) -> None:
    """Start the bot on the rotated data: what waited goes out, and a coordinator reads the report."""
    bot = RunningBot(settings)
    await bot.start()
    try:
        question = await fake.wait_for(
            "sendMessage", chat_id=REPORTER, timeout=20, predicate=lambda c: QUESTION in str(c.params)
        )
        assert question
        await fake.wait_for("sendMessage", chat_id=LATE, timeout=20)  # the update that waited in the inbox
        sent = len(fake.sent("sendDocument", chat_id=ADMIN))
        shown = await Person(fake, ADMIN).say(f"/r {code}")
        assert STORY in shown["text"]
        documents = await fake.wait_for("sendDocument", chat_id=ADMIN, count=sent + 2, timeout=20)
        contents = {call.params["document"].content for call in documents[sent:]}
        assert contents == {PHOTO, DOCUMENT}  # decrypted, and their records still bound to the report
        notes = [str(c.params.get("text", "")) for c in fake.sent("sendMessage", chat_id=ADMIN)]
        assert any(NOTE in text for text in notes)
    finally:
        await bot.stop()


# ---------------------------------------------------------------------------------------------- tests


def test_every_encrypted_column_is_rotated_or_explained() -> None:
    binary = {
        f"{table.name}.{column.name}"
        for table in schema.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, LargeBinary)
    }
    listed = Counter(f.name for f in SEALED_FIELDS)
    assert all(count == 1 for count in listed.values())
    missing = binary - set(listed) - set(NOT_SEALED)
    assert not missing, (
        f"add {sorted(missing)} to SEALED_FIELDS (or NOT_SEALED) in bot/security/sealed_fields.py"
    )
    assert not set(listed) - binary


async def test_rotation_re_encrypts_every_value_and_the_bot_keeps_working(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    settings, code = await populate(tmp_path, fake)
    assert settings.key_file is not None
    old = read_key_file(settings.key_file)
    before, files = await open_everything(settings, old), await evidence_files(settings, old)
    kinds = Counter((name, kind) for (name, _), (kind, _) in before.items())
    assert {name for name, kind in kinds if kind == "data"} == DATA_KEY_COLUMNS, kinds
    assert kinds[("inbox.payload", "transient")] and kinds[("drafts.payload", "transient")]
    assert len(files) == 2
    people = table_digest(settings, "users", "user_roles", "audit_log")
    epochs = TransientKeys(settings.data_dir / TRANSIENT_KEYS_FILE, old)
    epoch_keys = {e: epochs.key_of(e) for e in epochs.epochs()}

    said: list[str] = []
    done = await rotate_key(settings, say=said.append)

    new = read_key_file(settings.key_file)
    assert key_check(new) != key_check(old) and state_value(settings, KEY_CHECK) == key_check(new)
    assert state_value(settings, ROTATION) is None
    assert sum(done.resealed.values()) == kinds_total(kinds, "data") and not done.unreadable
    assert done.files == 2 and done.transient_rewrapped
    assert await open_everything(settings, new) == before
    assert await under_old_key(settings, old) == 0
    assert await evidence_files(settings, new) == files
    with pytest.raises(EvidenceDamaged):
        await EvidenceStore(settings.data_dir / "evidence", old).read(next(iter(files)))
    rewrapped = TransientKeys(settings.data_dir / TRANSIENT_KEYS_FILE, new)
    assert {e: rewrapped.key_of(e) for e in rewrapped.epochs()} == epoch_keys
    # Pseudonyms, roles and the audit chain are keyed by the identity secret, which a rotation keeps.
    assert table_digest(settings, "users", "user_roles", "audit_log") == people
    assert await audit_intact(settings, new)
    leftovers = [p.name for p in settings.key_file.parent.iterdir() if p.name != "jarchy.key"]
    assert leftovers == []
    await the_bot_still_works(fake, settings, code)


def kinds_total(kinds: Counter[tuple[str, str]], kind: str) -> int:
    """Sum the counts of one kind of value."""
    return sum(count for (_, k), count in kinds.items() if k == kind)


async def test_a_rotation_killed_midway_is_finished_by_running_it_again(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    settings, code = await populate(tmp_path, fake)
    assert settings.key_file is not None
    old = read_key_file(settings.key_file)
    before, files = await open_everything(settings, old), await evidence_files(settings, old)
    env = _cli_env(tmp_path, settings, fake)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "rotate-key",
        env={**env, "JARCHY_ROTATE_PAUSE_AFTER": "3"},
        stdout=PIPE,
        stderr=STDOUT,
    )
    try:
        output = await asyncio.wait_for(_read_until(process, b"paused after"), 60)
    finally:
        process.kill()  # SIGKILL: nothing of the rotation's own clean-up runs
        await process.wait()
    assert b"paused after 3 values" in output, output
    # Half-way: some values are under the new key already, the others still under the old one.
    new = read_key_file(settings.key_file.with_name("jarchy.key.next"))
    assert 0 < await under_old_key(settings, old) < kinds_total(_kinds(before), "data")
    assert read_key_file(settings.key_file) == old

    # Until the rotation is finished the bot does not start, and changes nothing.
    people = table_digest(settings, *[t.name for t in schema.metadata.sorted_tables])
    code_run, out_run = await _jarchy(env, "run")
    assert code_run == 2 and out_run.strip().count("\n") == 0, out_run
    assert "rotation is unfinished" in out_run and "jarchy rotate-key" in out_run
    assert table_digest(settings, *[t.name for t in schema.metadata.sorted_tables]) == people

    code_again, out_again = await _jarchy(env, "rotate-key")
    assert code_again == 0, out_again
    assert "finishing an unfinished rotation" in out_again and "rotate-key: done" in out_again
    # What the killed run had done is recognised as done, not mistaken for something unreadable.
    assert "(3 already were)" in out_again and "neither key" not in out_again, out_again
    assert read_key_file(settings.key_file) == new
    assert not settings.key_file.with_name("jarchy.key.next").exists()
    assert not settings.key_file.with_name("jarchy.key.old").exists()
    assert await open_everything(settings, new) == before
    assert await under_old_key(settings, old) == 0
    assert await evidence_files(settings, new) == files
    await the_bot_still_works(fake, settings, code)


def _kinds(opened: Opened) -> Counter[tuple[str, str]]:
    return Counter((name, kind) for (name, _), (kind, _) in opened.items())


async def test_a_crash_while_the_key_files_are_swapped_is_finished_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    await populate_lightly(settings)
    assert settings.key_file is not None
    old = read_key_file(settings.key_file)
    before = await open_everything(settings, old)
    real_replace, calls = os.replace, []

    def crash_on_the_third(source: Any, destination: Any) -> None:
        # 1: the new key written to .next; 2: the old key moved to .old; 3: .next into place: "crash".
        calls.append(destination)
        if len(calls) == 3:
            raise OSError("power cut")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", crash_on_the_third)
    with pytest.raises(OSError, match="power cut"):
        await rotate_key(settings, say=lambda _line: None)
    monkeypatch.setattr(os, "replace", real_replace)
    # No key at the usual place; the old one as .old, the new one as .next; the database already new.
    assert not settings.key_file.exists()
    assert read_key_file(settings.key_file.with_name("jarchy.key.old")) == old
    new = read_key_file(settings.key_file.with_name("jarchy.key.next"))
    assert state_value(settings, KEY_CHECK) == key_check(new)
    with pytest.raises(KeyFileError, match="rotation is unfinished"):
        await _open(settings)
    await rotate_key(settings, say=lambda _line: None)
    assert read_key_file(settings.key_file) == new
    assert sorted(p.name for p in settings.key_file.parent.iterdir()) == ["jarchy.key"]
    assert await open_everything(settings, new) == before
    services = await _open(settings)
    await services.close()


async def test_a_passphrase_wrapped_key_rotates_into_a_wrapped_key(tmp_path: Path) -> None:
    phrase = tmp_path / "passphrase"
    phrase.write_text("correct horse battery staple\n")
    phrase.chmod(0o600)
    key_path = tmp_path / "keys" / "jarchy.key"
    old = DataKey.generate()
    write_key_file(key_path, old, passphrase=b"correct horse battery staple")
    settings = make_settings(tmp_path, key_passphrase_file=phrase)
    await populate_lightly(settings)
    before = await open_everything(settings, old)
    await rotate_key(settings, say=lambda _line: None)
    assert key_path.read_text().startswith(WRAPPED)
    new = read_key_file(key_path, Passphrase(phrase))
    assert key_check(new) != key_check(old)
    assert await open_everything(settings, new) == before
    with pytest.raises(KeyFileError, match="passphrase does not open"):
        read_key_file(key_path, Passphrase(ask=lambda _prompt: "another one"))
    services = await _open(settings)
    await services.close()


async def test_a_key_given_as_a_credential_rotates_into_a_new_file(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    old = DataKey.generate()
    write_key_file(credentials / "jarchy_key", old)
    settings = make_settings(tmp_path, key_file=None, credentials_dir=credentials)
    assert settings.key_location.managed
    await populate_lightly(settings)
    before = await open_everything(settings, old)
    with pytest.raises(KeyFileError, match="--out"):
        await rotate_key(settings, say=lambda _line: None)
    out = tmp_path / "new-key" / "jarchy.key"
    done = await rotate_key(settings, out=out, say=lambda _line: None)
    assert done.old_key_left == credentials / "jarchy_key" and read_key_file(done.old_key_left) == old
    new = read_key_file(out)
    assert await open_everything(settings, new) == before
    # The old credential no longer opens the database: the one line says it is an older rotation.
    with pytest.raises(KeyFileError, match="another rotation of the right key"):
        await _open(settings)
    moved = make_settings(tmp_path, key_file=out)
    services = await _open(moved)
    await services.close()


async def test_no_rotation_while_the_bot_runs(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url)
    bot = RunningBot(settings)
    await bot.start()
    try:
        await fake.wait_for("getUpdates", timeout=20)
        with pytest.raises(KeyFileError, match="a running jarchy uses"):
            await rotate_key(settings, say=lambda _line: None)
    finally:
        await bot.stop()
    assert state_value(settings, ROTATION) is None


def _cli_env(tmp_path: Path, settings: Settings, fake: FakeBotApi) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "PTB_TIMEDELTA": "true",
        "HOME": str(tmp_path / "home"),
        "JARCHY_BOT_TOKEN": TEST_TOKEN,
        "JARCHY_API_URL": fake.url,
        "JARCHY_DATA_DIR": str(settings.data_dir),
        "JARCHY_KEY_FILE": str(settings.key_file),
        "JARCHY_LOG_LEVEL": "WARNING",
    }


async def _read_until(process: asyncio.subprocess.Process, marker: bytes) -> bytes:
    assert process.stdout is not None
    seen = b""
    while marker not in seen:
        line = await process.stdout.readline()
        if not line:
            break
        seen += line
    return seen


async def _jarchy(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, env=env, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, output.decode()
