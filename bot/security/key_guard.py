"""The start-up key guard: the right key for this database, or a stop before anything is touched.

It runs before migrations and before any service exists, and only reads the database, which keeps a key
check (bot.security.keys.key_check) in bot_state. A key that does not match it, a missing key for a
database that holds data, an unfinished rotation, or (for `run`) a key kept inside the data directory stops
the program with one line and exit code 2. Only `run` on an empty database creates a key, and then writes
its check. A database from before key checks is accepted if the key opens one of its encrypted values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.security.crypto import Cipher
from bot.security.keys import (
    DataKey,
    KeyFileError,
    Passphrase,
    create_key_file,
    key_check,
    open_key_file,
    same_identity,
)
from bot.settings import KEY_BESIDE_DATA_CONSENT, Settings
from storage import schema
from storage.copy import COPY_MARK, MOVED
from storage.database import Database
from storage.state import StateRepository

log = logging.getLogger(__name__)

KEY_CHECK = "key_check"
ROTATION = (
    "key_rotation"  # JSON while `jarchy rotate-key` has not finished (see bot.services.upkeep.key_rotation)
)
COPY_UNFINISHED = (
    "this database is an unfinished copy (`jarchy db copy` was cut short or failed before it was verified); "
    "run the same `jarchy db copy --to URL` again to finish it, or go back to the original database"
)
MOVED_AWAY = (
    "this database was copied to PostgreSQL by `jarchy db copy` and is no longer the installation's: set "
    "JARCHY_DATABASE_URL to the PostgreSQL database, then delete this file (or copy again with "
    "--retire-source, which empties and deletes it)"
)
# In the data directory after `jarchy db copy --retire-source`: the path of the SQLite file it deleted, so a
# start that still points at it does not quietly begin an empty installation there.
RETIRED_FILE = "moved-to-postgresql"
ROTATION_UNFINISHED = (
    "a key rotation is unfinished (killed or failed half-way); run `jarchy rotate-key` again to finish it "
    "before starting the bot"
)
_SAMPLES_PER_FIELD = 3


@dataclass(frozen=True)
class DatabaseState:
    """What the database says about keys, read without one."""

    tables: frozenset[str]
    key_check: str | None
    rotation: str | None
    holds_data: bool
    copying: bool = False
    moved: bool = False


@dataclass(frozen=True)
class KeyGrant:
    """The key the program may use, and the key check to write once the schema is in place (or None)."""

    key: DataKey
    pending_check: str | None

    async def settle(self, db: Database) -> None:
        """Write the key check if the database has none; stop if another process wrote a different one."""
        if self.pending_check is None:
            return
        async with db.write() as conn:
            stored = await StateRepository().put_if_absent(conn, KEY_CHECK, self.pending_check)
        if stored != self.pending_check:
            raise KeyFileError(mismatch_message(stored, self.pending_check))


# One per source for the whole process: a passphrase typed at start is asked once, not per command step.
_PASSPHRASES: dict[tuple[Path | None, bool], Passphrase] = {}


def passphrase_for(settings: Settings) -> Passphrase:
    """Return where a wrapped key's passphrase comes from under these settings."""
    file = settings.key_passphrase_file
    managed = file is not None and file.parent in {settings.secrets_dir, settings.credentials_dir}
    return _PASSPHRASES.setdefault((file, managed), Passphrase(file, managed=managed))


def read_key(settings: Settings, passphrase: Passphrase | None = None) -> DataKey:
    """Read the configured key; never create one."""
    location = settings.key_location
    if not location.path.exists():
        raise KeyFileError(
            f"no data key at {location.path} ({location.source}); this command never creates one"
        )
    return open_key_file(location.path, passphrase or passphrase_for(settings), managed=location.managed).key


async def guard_key(
    settings: Settings,
    db: Database,
    *,
    create: bool,
    passphrase: Passphrase | None = None,
    copying: bool = False,
) -> KeyGrant:
    """Return the key for this database, creating one only if `create` and the database is empty.

    `copying`: `jarchy db copy` verifying its own unfinished copy, which may carry the copy mark.
    """
    location = settings.key_location
    if create:
        refuse_key_beside_data(settings)
    refuse_retired(settings)
    state = await database_state(db)
    refuse_moved_or_copying(state, copying=copying)
    if state.rotation is not None:
        raise KeyFileError(ROTATION_UNFINISHED)
    if not location.path.exists():
        if state.holds_data:
            raise KeyFileError(
                f"the data key is missing: {location.path} ({location.source}) does not exist, but this "
                "database holds data encrypted under a key; restore that key file or point JARCHY_KEY_FILE "
                "at it (no key was created, nothing was changed)"
            )
        if not create:
            raise KeyFileError(
                f"no data key at {location.path} ({location.source}); `jarchy run` creates one on an empty "
                "database, or write one with `jarchy keygen`"
            )
        if location.managed:
            raise KeyFileError(
                f"no data key at {location.path} ({location.source}); write one with `jarchy keygen --out "
                "FILE` and give FILE to the service as that credential or secret"
            )
        try:
            key = create_key_file(location.path)
        except KeyFileError:
            if not location.path.is_file():
                raise
            # Another first start wrote it a moment ago: use that one (settle() checks it won the race).
            key = open_key_file(location.path, passphrase or passphrase_for(settings)).key
            return KeyGrant(key, key_check(key))
        log.warning(
            "Created a new data key at %s, apart from the database. Back it up; to move it (another disk, a "
            "credential, a passphrase), stop the bot, move the file and set JARCHY_KEY_FILE: see README.",
            location.path,
        )
        return KeyGrant(key, key_check(key))
    key = open_key_file(location.path, passphrase or passphrase_for(settings), managed=location.managed).key
    check = key_check(key)
    if state.key_check is not None:
        if state.key_check != check:
            raise KeyFileError(mismatch_message(state.key_check, check))
        return KeyGrant(key, None)
    if state.holds_data:
        verdict = await probe(db, key, state.tables, settings.admin_ids)
        if verdict is False:
            raise KeyFileError(
                "the data key does not match this database (none of its encrypted values opens under "
                f"{location.path}); restore the key it was written with or point JARCHY_KEY_FILE at it. "
                "Nothing was changed."
            )
        if verdict is None:
            log.warning("This database holds nothing encrypted yet: the key could not be checked against it.")
    return KeyGrant(key, check)


def refuse_moved_or_copying(state: DatabaseState, *, copying: bool = False) -> None:
    """Stop if the database is an unverified copy, or the original of a verified one."""
    if state.copying and not copying:
        raise KeyFileError(COPY_UNFINISHED)
    if state.moved:
        raise KeyFileError(MOVED_AWAY)


def retired_sqlite(settings: Settings) -> Path | None:
    """Return the SQLite file these settings name if `db copy --retire-source` moved it away, else None."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    try:
        named = (settings.data_dir / RETIRED_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path = Path(url.database).resolve()
    return path if named == str(path) else None


def refuse_retired(settings: Settings) -> None:
    """Stop if the SQLite database was copied to PostgreSQL and deleted: starting would begin an empty one."""
    path = retired_sqlite(settings)
    if path is not None:
        raise KeyFileError(
            f"the database {path} was moved to PostgreSQL and deleted by `jarchy db copy --retire-source`; "
            "set JARCHY_DATABASE_URL to the PostgreSQL database (or delete "
            f"{settings.data_dir / RETIRED_FILE} to start an empty installation here)"
        )


def refuse_key_beside_data(settings: Settings) -> None:
    """Stop `run` if the key lies with the data, unless the operator consented to what that costs."""
    path = settings.key_location.path
    if not settings.key_beside_data and beside_data(settings, path):
        raise KeyFileError(beside_data_message(settings, path))


def mismatch_message(stored: str, loaded: str) -> str:
    """Return the one line that says the key is not this database's."""
    hint = (
        "it is another rotation of the right key (a copy from before or after `jarchy rotate-key`?)"
        if same_identity(stored, loaded)
        else "restore the key file this database was written with, or point JARCHY_KEY_FILE at it"
    )
    return f"the data key does not match this database (key check failed); {hint}. Nothing was changed."


def beside_data(settings: Settings, path: Path) -> bool:
    """Tell whether a key path lies inside the data directory or the SQLite database's directory."""
    places = [settings.data_dir]
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        places.append(Path(url.database).parent)
    resolved = path.resolve()
    return any(resolved.is_relative_to(place.resolve()) for place in places)


def beside_data_message(settings: Settings, path: Path) -> str:
    """Return the one line that refuses a key kept with the data."""
    return (
        f"the data key {path} is inside the data directory {settings.data_dir}: a seized disk would reveal "
        "everything. Move it to another disk or a credential and set JARCHY_KEY_FILE (see README), or set "
        f"JARCHY_KEY_BESIDE_DATA={KEY_BESIDE_DATA_CONSENT}"
    )


async def database_state(db: Database) -> DatabaseState:
    """Read the key check, any unfinished rotation, and whether any table holds a row."""
    async with db.read() as conn:
        tables = frozenset(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        check = rotation = None
        copying = moved = False
        if schema.bot_state.name in tables:
            check = await StateRepository().get(conn, KEY_CHECK)
            rotation = await StateRepository().get(conn, ROTATION)
            copying = await StateRepository().get(conn, COPY_MARK) is not None
            moved = await StateRepository().get(conn, MOVED) is not None
        holds = check is not None or rotation is not None
        for table in schema.metadata.sorted_tables:
            if holds:
                break
            # bot_state holds offsets and settings, not personal data.
            if table.name in tables and table is not schema.bot_state:
                holds = (await conn.execute(select(1).select_from(table).limit(1))).first() is not None
    return DatabaseState(tables, check, rotation, holds, copying, moved)


async def probe(db: Database, key: DataKey, tables: frozenset[str], admin_ids: frozenset[int]) -> bool | None:
    """Tell whether `key` is this database's, from what it holds: True, False, or None (nothing tells)."""
    from bot.runtime.audit import AuditLog
    from bot.runtime.clock import SystemClock
    from bot.security.pseudonyms import Pseudonymizer
    from bot.security.sealed_fields import SEALED_FIELDS, open_under, under_data_key
    from storage.audit import AuditRepository

    cipher, tried = Cipher(key), 0
    for sealed in SEALED_FIELDS:
        if sealed.table.name not in tables:
            continue
        try:
            # One transaction per column: a column an old schema lacks must not spoil the others.
            async with db.read() as conn:
                rows = list(await conn.execute(sealed.page(None, _SAMPLES_PER_FIELD * 4)))
        except SQLAlchemyError:
            continue
        for row in [r for r in rows if under_data_key(bytes(r.sealed))][:_SAMPLES_PER_FIELD]:
            tried += 1
            if open_under(cipher, bytes(row.sealed), sealed.bindings(row)) is not None:
                return True
    if tried:
        return False
    # Nothing is encrypted under the data key yet; the pseudonyms and the audit chain are keyed by it too.
    try:
        if admin_ids and schema.users.name in tables:
            names = [Pseudonymizer(key).of_user(admin) for admin in admin_ids]
            async with db.read() as conn:
                found = await conn.execute(select(func.count()).where(schema.users.c.pseudonym.in_(names)))
                if found.scalar_one():
                    return True
        if schema.audit_log.name in tables:
            async with db.read() as conn:
                entries = (
                    await conn.execute(select(func.count()).select_from(schema.audit_log))
                ).scalar_one()
            if entries:
                verdict = await AuditLog(
                    db, AuditRepository(), StateRepository(), key, SystemClock()
                ).verify()
                return verdict.intact
    except SQLAlchemyError:
        return None
    return None
