"""`jarchy rotate-key`: everything encrypted under the data key, re-encrypted under a new one, resumably.

What a rotation renews: the key's rotating secret, and so the encryption of every column listed in
bot.security.sealed_fields, of every evidence file, the wrapping of the transient epoch keys
(bot.security.transient) and the first half of the key check. What it keeps: the identity secret, from
which the pseudonyms (HMAC of Telegram ids, which are not stored and so cannot be re-derived), the audit
chain's HMAC and its sealed head, and reporters' K- codes come. So everyone keeps their role, subscription
and codes, and `jarchy audit verify` still passes; but someone holding the old key file can still link a
Telegram id to its pseudonym and forge audit entries. Backups taken before the rotation stay readable with
the old key only: the new key file holds nothing that derives the old encryption key.

Every step is safe to repeat after a crash (kill -9 anywhere), and the bot refuses to start until the
rotation has finished (bot.security.key_guard):

1. The new key goes to `<key file>.next` (fsynced), then bot_state records the rotation (both key checks).
2. Values are re-encrypted in small transactions; each is tried under the new key first (already done:
   skipped), then the old. Evidence files are resealed one by one (write, fsync, rename); the transient
   key slots are re-wrapped in place.
3. bot_state gets the new key check, then the key file is swapped: the old one moves to `<key file>.old`,
   `.next` takes its place, the directory is fsynced, and only then is `.old` overwritten and removed.
4. The rotation record is cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.instance import DataDirInUse, lock_transient_keys
from bot.security.crypto import Cipher
from bot.security.key_guard import (
    KEY_CHECK,
    ROTATION,
    database_state,
    mismatch_message,
    passphrase_for,
    probe,
    refuse_moved_or_copying,
)
from bot.security.keys import (
    DataKey,
    KeyFileError,
    Passphrase,
    destroy_key_file,
    fsync_directory,
    key_check,
    key_file_is_wrapped,
    open_key_file,
    write_key_file,
)
from bot.security.sealed_fields import SEALED_FIELDS, SealedField, open_under, under_data_key
from bot.security.transient import TransientKeys
from bot.services.reports.evidence import EvidenceDamaged, EvidenceStore
from bot.settings import Settings
from bot.wiring import TRANSIENT_KEYS_FILE
from storage import migrations, schema
from storage.database import Database
from storage.state import StateRepository

BATCH_ROWS = 200


@dataclass
class Rotation:
    """What a run of rotate-key did."""

    key_file: Path
    resealed: Counter[str] = field(default_factory=Counter)  # values re-encrypted now, per column
    already: int = 0  # values a previous, interrupted run had re-encrypted
    unreadable: Counter[str] = field(default_factory=Counter)  # opened under neither key: left as they were
    files: int = 0
    missing_files: int = 0
    transient_rewrapped: bool = False
    old_key_left: Path | None = None  # a credential jarchy cannot remove: the operator replaces it


@dataclass(frozen=True)
class _Paths:
    current: Path  # where the bot reads the key now
    target: Path  # where the new key ends up
    next: Path
    old: Path

    @property
    def in_place(self) -> bool:
        return self.current.resolve() == self.target.resolve()


async def rotate_key(
    settings: Settings,
    *,
    out: Path | None = None,
    passphrase: Passphrase | None = None,
    pause_after: int | None = None,
    say: Callable[[str], None] = print,
) -> Rotation:
    """Rotate the data key (or finish an interrupted rotation); see the module docstring.

    `out`: write the new key there instead of replacing the key file (needed when the key is a credential
    or docker secret, which jarchy cannot replace). `pause_after`: a test hook that stops after that many
    values, so a test can kill the process half-way.
    """
    location = settings.key_location
    if location.managed and out is None:
        raise KeyFileError(
            f"the data key is a {location.source} ({location.path}), which jarchy cannot replace: run "
            "`jarchy rotate-key --out NEW_FILE`, then provide NEW_FILE as that credential instead"
        )
    target = out if out is not None else location.path
    paths = _Paths(
        location.path,
        target,
        target.with_name(target.name + ".next"),
        location.path.with_name(location.path.name + ".old"),
    )
    passphrase = passphrase or passphrase_for(settings)
    with _exclusive(settings.data_dir):
        db = Database.connect(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
        try:
            return await _rotate(settings, db, paths, passphrase, location.managed, pause_after, say)
        finally:
            await db.close()


async def _rotate(
    settings: Settings,
    db: Database,
    paths: _Paths,
    passphrase: Passphrase,
    managed: bool,
    pause_after: int | None,
    say: Callable[[str], None],
) -> Rotation:
    state = await database_state(db)
    refuse_moved_or_copying(state)  # a rotation would re-encrypt a half copy, or an abandoned original
    report = Rotation(paths.target)
    repo = StateRepository()
    old: DataKey | None
    if state.rotation is None:
        opened = open_key_file(paths.current, passphrase, managed=managed)
        old = opened.key
        if state.key_check is not None and state.key_check != key_check(old):
            raise KeyFileError(mismatch_message(state.key_check, key_check(old)))
        unchecked = state.key_check is None and state.holds_data
        if unchecked and await probe(db, old, state.tables, settings.admin_ids) is False:
            raise KeyFileError("the data key does not match this database; nothing was rotated")
        await migrations.upgrade(db)
        new = old.rotated()
        # A `.next` left by an attempt that crashed before the record below is not in use: replace it.
        secret = passphrase.get(paths.current) if opened.wrapped else None
        write_key_file(paths.next, new, passphrase=secret, overwrite=True)
        record: dict[str, str] = {"old": key_check(old), "new": key_check(new), "phase": "reencrypt"}
        # Plain writes throughout: the rotation runs offline from the command line, with no Core, outbox
        # or audit log to carry (the bot is stopped while the key changes).
        async with db.write() as conn:
            await repo.put(conn, ROTATION, json.dumps(record))
        say(f"rotate-key: new key written to {paths.next}; re-encrypting")
    else:
        record = json.loads(state.rotation)
        keys = _find_keys(record, paths, passphrase)
        new = _need(
            keys, record["new"], f"the new key ({paths.next}, or {paths.target}) of the unfinished rotation"
        )
        old = keys.get(record["old"])
        say("rotate-key: finishing an unfinished rotation")
    if record["phase"] == "reencrypt":
        if old is None:
            raise KeyFileError(
                f"the old key ({paths.current}) of the unfinished rotation is missing or unreadable; "
                "the rotation cannot go on without it"
            )
        await _reencrypt(settings, db, old, new, report, pause_after, say)
        record["phase"] = "swap"
        async with db.write() as conn:  # plain: offline, as above
            await repo.put(conn, KEY_CHECK, record["new"])
            await repo.put(conn, ROTATION, json.dumps(record))
    # Old ciphertexts are not left in the WAL for whoever gets the old key later.
    await db.checkpoint()
    _swap(paths, record["new"], passphrase, managed, report)
    async with db.write() as conn:  # plain: offline, as above
        await repo.delete(conn, ROTATION)
    return report


def _need(keys: dict[str, DataKey], check: str, what: str) -> DataKey:
    found = keys.get(check)
    if found is None:
        raise KeyFileError(
            f"{what} is missing or unreadable; the rotation cannot go on without it (give the same --out "
            "as the first time)"
        )
    return found


def _find_keys(record: dict[str, str], paths: _Paths, passphrase: Passphrase) -> dict[str, DataKey]:
    """Open every file a rotation may have left a key in; index them by key check."""
    found: dict[str, DataKey] = {}
    for path in dict.fromkeys([paths.current, paths.next, paths.target, paths.old]):
        if not path.is_file():
            continue
        try:
            key = open_key_file(path, passphrase if key_file_is_wrapped(path) else None, managed=True).key
        except KeyFileError:
            continue
        check = key_check(key)
        if check in (record["old"], record["new"]):
            found[check] = key
    return found


async def _reencrypt(
    settings: Settings,
    db: Database,
    old: DataKey,
    new: DataKey,
    report: Rotation,
    pause_after: int | None,
    say: Callable[[str], None],
) -> None:
    before, after = Cipher(old), Cipher(new)
    tables = (await database_state(db)).tables
    done = 0
    for sealed in SEALED_FIELDS:
        if sealed.table.name not in tables:
            continue
        position: tuple[object, ...] | None = None
        while True:
            async with db.write() as conn:  # plain: the rotation is offline (see `_rotate`)
                rows = list(await conn.execute(sealed.page(position, _batch(done, pause_after))))
                changed = 0
                for row in rows:
                    changed += await _reseal_value(conn, sealed, row, before, after, report)
            if not rows:
                break
            position = sealed.key_of(rows[-1])
            done += changed
            await _maybe_pause(done, pause_after, say)
    store_dir = settings.data_dir / "evidence"
    source, destination = EvidenceStore(store_dir, old), EvidenceStore(store_dir, new)
    async with db.read() as conn:
        listed = {str(uid) for uid in await conn.scalars(select(schema.evidence.c.uid))}
    # Files of drafts not yet submitted are not in the evidence table: take every file there is.
    on_disk = {p.stem for p in store_dir.glob("*.bin")} if store_dir.is_dir() else set()
    report.missing_files = len(listed - on_disk)
    for uid in sorted(on_disk):
        try:
            changed_file = await source.reseal(uid, destination)
        except EvidenceDamaged:
            report.unreadable["evidence files"] += 1
            continue
        if changed_file:
            report.files += 1
            done += 1
            await _maybe_pause(done, pause_after, say)
    report.transient_rewrapped = _rewrap_transient(settings.data_dir / TRANSIENT_KEYS_FILE, old, new)


def _batch(done: int, pause_after: int | None) -> int:
    # With the test hook, a batch ends where the pause falls.
    return BATCH_ROWS if pause_after is None else max(1, min(BATCH_ROWS, pause_after - done))


async def _reseal_value(
    conn: AsyncConnection, sealed: SealedField, row: Any, before: Cipher, after: Cipher, report: Rotation
) -> int:
    value = bytes(row.sealed)
    if not under_data_key(value):
        return 0  # a transient epoch key's (its slot is re-wrapped instead), or clear legacy JSON
    bindings = sealed.bindings(row)
    if open_under(after, value, bindings) is not None:
        report.already += 1
        return 0
    opened = open_under(before, value, bindings)
    if opened is None:
        report.unreadable[sealed.name] += 1
        return 0
    binding, plain = opened
    await conn.execute(sealed.replace(row, after.encrypt(plain, binding=binding)))
    report.resealed[sealed.name] += 1
    return 1


async def _maybe_pause(done: int, pause_after: int | None, say: Callable[[str], None]) -> None:
    if pause_after is not None and done >= pause_after:
        say(f"rotate-key: paused after {done} values (JARCHY_ROTATE_PAUSE_AFTER); kill me")
        await asyncio.Event().wait()


def _rewrap_transient(path: Path, old: DataKey, new: DataKey) -> bool:
    """Re-wrap the transient epoch keys under the new key; False if there were none to re-wrap."""
    # Opened only while a slot under the old key is left: once all are re-wrapped there is nothing to do.
    if not path.is_file() or not _opens_a_slot(path, old):
        return False
    TransientKeys(path, old).rewrap(new)
    return True


def _opens_a_slot(path: Path, key: DataKey) -> bool:
    return any(path.read_bytes()) and TransientKeys.opens(path, key)


def _swap(paths: _Paths, new_check: str, passphrase: Passphrase, managed: bool, report: Rotation) -> None:
    """Put the new key where it belongs, then destroy the old one; each step idempotent."""

    def holds_new(path: Path) -> bool:
        if not path.is_file():
            return False
        wrapped = key_file_is_wrapped(path)
        try:
            key = open_key_file(path, passphrase if wrapped else None, managed=True).key
        except KeyFileError:
            return False
        return key_check(key) == new_check

    if not holds_new(paths.target):
        if paths.in_place and paths.current.is_file():
            # Until the new key is in place the old one stays reachable (as .old), whatever happens.
            os.replace(paths.current, paths.old)
        os.replace(paths.next, paths.target)
        fsync_directory(paths.target.parent)
    destroy_key_file(paths.next)
    if managed:
        report.old_key_left = paths.current
    elif not paths.in_place:
        destroy_key_file(paths.current)
    destroy_key_file(paths.old)


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's instance lock: no bot may run on it while keys change."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "instance.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise KeyFileError(
                f"a running jarchy uses {data_dir}; stop it (and every other instance on this database) "
                "before rotating the key"
            ) from None
        try:
            transient = lock_transient_keys(data_dir)
        except DataDirInUse:
            # A bot with a configured instance name takes no instance lock, but always this one.
            raise KeyFileError(
                f"a running jarchy uses {data_dir}; stop it (and every other instance on this database) "
                "before rotating the key"
            ) from None
        try:
            yield
        finally:
            transient.close()
