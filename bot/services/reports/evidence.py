"""Evidence files: streamed from Telegram, hashed and encrypted chunk by chunk into the data directory (so
they outlive deletion on Telegram), bounded on disk and in memory, and each kept record bound to its report.

File format 0x02: the version byte, a secretstream header (XChaCha20-Poly1305), then chunks of CHUNK bytes
of plaintext (the last one shorter, possibly empty, and tagged FINAL), each sealed with
"evidence.file:<uid>" as associated data: a file renamed to another uid, cut short, reordered or made under
another key does not open. Format 0x01 (before streaming) is one XChaCha20-Poly1305 ciphertext of the whole
file under the field key; it is still read, and `reseal` rewrites it as 0x02.

Kept rows carry a keyed BLAKE2b MAC over (report id, report code, uid, kind, sha256, size, time received):
a row moved to another report, or edited, no longer matches, and /r, exports and `jarchy audit verify` say so.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import nacl.bindings as sodium
import nacl.exceptions
import nacl.hash
from nacl.encoding import RawEncoder
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.errors import Damaged, JarchyError, LimitReached
from bot.runtime.proxy import connector
from bot.security import Cipher, DataKey, DecryptionError
from bot.security.bindings import evidence_file_binding, file_ref_binding, staged_binding
from bot.security.owner_tags import OwnerTags
from bot.settings import SecretStr, Settings
from storage.database import Database
from storage.evidence import Evidence, EvidenceRepository, StagedRow
from storage.state import StateRepository
from storage.types import from_micros, to_micros

log = logging.getLogger(__name__)

MB = 1024 * 1024
MAX_FILE_BYTES = 20 * MB  # the Bot API's getFile limit
CHUNK = 64 * 1024
# The bot_state key migration 0010 leaves: rows kept before it (ids up to the value) are bound once.
LEGACY_MARK = "evidence.legacy_upto"
# What a kept row's check says.
BOUND, MOVED, UNSEALED = "bound", "moved", "unsealed"

_V1, _V2 = b"\x01", b"\x02"
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_MAC_PERSON = b"jarchy-evidence1"  # BLAKE2b personalisation: 16 bytes at most
_FLOOR_CHECK_BYTES = MB  # free space is looked at again after every this many bytes written
_READS_AT_ONCE = 2  # /r holds a whole file in memory to upload it (python-telegram-bot needs bytes)
_PARTIAL_AGE_S = 3600.0


class EvidenceRefused(LimitReached):
    """A file is not taken (too big, a quota, the free-space floor, too many at once); `key` says why."""


class DownloadFailed(JarchyError):
    """Telegram did not hand the file over; the message never carries the URL (it holds the bot token)."""


class EvidenceDamaged(Damaged):
    """A stored file is missing, does not open under this key and uid, or does not match its digest."""


@dataclass(frozen=True)
class EvidenceLimits:
    """Bounds on evidence: bytes staged per person, bytes overall, free space kept, downloads at once."""

    per_person_bytes: int = 100 * MB
    total_bytes: int = 10 * 1024 * MB
    floor_bytes: int = 1024 * MB
    downloads: int = 3
    # The largest file taken: the Bot API's getFile limit; None where a local-mode server lifts it (the
    # quotas and the floor still bound it).
    file_bytes: int | None = MAX_FILE_BYTES
    # SQLite files on the same disk: the floor grows by their size, the room VACUUM or a migration that
    # rebuilds a table needs, so a disk filled by evidence never stops the database.
    database_files: tuple[Path, ...] = ()


def evidence_limits(settings: Settings) -> EvidenceLimits:
    """Build the limits from the settings."""
    database_files: tuple[Path, ...] = ()
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        main = Path(url.database)
        database_files = (main, main.with_name(main.name + "-wal"))
    return EvidenceLimits(
        per_person_bytes=settings.evidence_per_person_mb * MB,
        total_bytes=settings.evidence_total_mb * MB,
        floor_bytes=settings.disk_floor_mb * MB,
        downloads=settings.evidence_downloads,
        file_bytes=None if settings.api_local_mode else MAX_FILE_BYTES,
        database_files=database_files,
    )


def free_bytes(directory: Path) -> int:
    """Return the bytes free to an unprivileged writer on the disk holding `directory`."""
    return shutil.disk_usage(directory).free


@dataclass(frozen=True)
class SavedFile:
    """Where a file went and what it was."""

    uid: str
    sha256: str
    size: int


@dataclass(frozen=True)
class StagedFile:
    """A file received for a draft, as its sealed staging row describes it."""

    row_id: int
    uid: str
    kind: str
    sha256: str
    size: int
    received_at: datetime
    file_id: str


@dataclass(frozen=True)
class EvidenceProblem:
    """A kept file that does not check out: `problem` is moved, unsealed, missing or damaged."""

    code: str
    uid: str
    sha256: str
    problem: str


@dataclass(frozen=True)
class EvidenceAudit:
    """What `verify_evidence` found."""

    checked: int
    problems: list[EvidenceProblem]

    @property
    def ok(self) -> bool:
        """Tell whether every file checked out."""
        return not self.problems


class EvidenceStore:
    """Encrypted evidence files (one per uid) and their rows: staging, keeping, binding, quotas."""

    def __init__(
        self,
        directory: Path,
        key: DataKey,
        *,
        cipher: Cipher | None = None,
        limits: EvidenceLimits | None = None,
        free_space: Callable[[Path], int] = free_bytes,
        rows: EvidenceRepository | None = None,
        transient_staging: bool = False,
    ) -> None:
        self._directory = directory
        # Format 0x01 files, staged rows and file references (the bot passes its own, with transient keys).
        self._cipher = cipher or Cipher(key)
        # Staged rows go under the transient keys only once bot.services.upkeep.history rewrites them at each
        # scrub (their binding: `staged_binding`); until then a scrub would leave them unreadable.
        self._transient_staging = transient_staging
        self._stream_key = key.derive("evidence.file-stream")
        self._bind_key = key.derive("evidence.bind")
        self.limits = limits or EvidenceLimits()
        # Replaceable, so a test can put the disk at the floor without filling it.
        self.free_space = free_space
        # Staged rows name their owner by a keyed tag under the transient keys (bot.security.owner_tags).
        self.rows = rows or EvidenceRepository(OwnerTags(self._cipher))
        self._state = StateRepository()
        self._slots = asyncio.Semaphore(self.limits.downloads)
        self._waiting = 0
        self._people: dict[str, asyncio.Lock] = {}
        self._people_waiting: Counter[str] = Counter()
        self._reserved: dict[int, int] = {}  # bytes of downloads in flight, not staged yet
        self._reads = asyncio.Semaphore(_READS_AT_ONCE)

    # ------------------------------------------------------------------ receiving

    @asynccontextmanager
    async def receiving(self, db: Database, owner: str, declared: int | None) -> AsyncIterator[Upload]:
        """Hold a download slot (one per person, `limits.downloads` overall) and check the quotas for a
        file of `declared` bytes (Telegram's file_size, if it told). The saved file is deleted when the
        block ends unless `Upload.keep()` was called, so an error never leaves one behind."""
        largest = self.limits.file_bytes
        if declared is not None and largest is not None and declared > largest:
            raise EvidenceRefused("report.file_too_big", limit=largest // MB)
        async with self._person_slot(owner), self._download_slot():
            async with db.read() as conn:
                person, total = await self.usage(conn, owner)
            upload = Upload(self, person, total)
            self._reserved[id(upload)] = declared or 0
            try:
                upload.admit(declared or 0)
                await asyncio.to_thread(upload.check_floor, declared or 0)
                yield upload
            finally:
                del self._reserved[id(upload)]
                if upload.saved is not None and not upload.kept:
                    await self.delete([upload.saved.uid])

    async def usage(self, conn: AsyncConnection, owner: str) -> tuple[int, int]:
        """Return (bytes staged by this person, bytes of all evidence, staged and kept)."""
        person = staged = 0
        for row_owner, row in await self.rows.all_staged(conn):
            opened = self._open_staged(row_owner, row)
            if opened is not None:
                staged += opened.size
                person += opened.size if row_owner == owner else 0
        return person, staged + await self.rows.kept_bytes(conn)

    def reserved_by_others(self, upload: Upload) -> int:
        """Return the bytes other downloads in flight will take."""
        return sum(size for key, size in self._reserved.items() if key != id(upload))

    def floor(self) -> int:
        """Return the free space uploads must leave: the configured floor plus the database's size."""
        extra = 0
        try:
            device = os.stat(self._existing_directory()).st_dev
        except OSError:
            device = None
        for path in self.limits.database_files:
            with suppress(OSError):
                info = path.stat()
                if device is None or info.st_dev == device:
                    extra += info.st_size
        return self.limits.floor_bytes + extra

    def free(self) -> int:
        """Return the free space where the files go."""
        return self.free_space(self._existing_directory())

    def _existing_directory(self) -> Path:
        path = self._directory
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    @asynccontextmanager
    async def _person_slot(self, owner: str) -> AsyncIterator[None]:
        # One download per person at a time, so their staged bytes are counted before the next starts.
        lock = self._people.setdefault(owner, asyncio.Lock())
        self._people_waiting[owner] += 1
        try:
            async with lock:
                yield
        finally:
            self._people_waiting[owner] -= 1
            if not self._people_waiting[owner]:
                del self._people_waiting[owner]
                self._people.pop(owner, None)

    @asynccontextmanager
    async def _download_slot(self) -> AsyncIterator[None]:
        # Waiting downloads hold a dispatch slot each: past a short queue, refusing is kinder to the
        # texts and reports waiting behind them than queueing ever more.
        if self._slots.locked() and self._waiting >= 2 * self.limits.downloads:
            raise EvidenceRefused("evidence.busy")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    # ------------------------------------------------------------------ files

    async def save(self, chunks: AsyncIterable[bytes]) -> SavedFile:
        """Hash, encrypt and write a stream durably, with no limit but the Bot API's (tests, tools)."""
        upload = Upload(self, 0, 0, unlimited=True)
        return await upload.save(chunks)

    async def chunks(self, uid: str) -> AsyncIterator[bytes]:
        """Yield a file's original bytes a chunk at a time (raises EvidenceDamaged)."""
        reader = await asyncio.to_thread(self._reader, uid)
        try:
            while (piece := await asyncio.to_thread(reader.next)) is not None:
                if piece:
                    yield piece
        finally:
            reader.close()

    async def read(self, uid: str, sha256: str | None = None) -> bytes:
        """Return a whole file (20 MB at most); with `sha256`, raise EvidenceDamaged if it differs."""
        content = bytearray()
        digest = hashlib.sha256()
        async for piece in self.chunks(uid):
            content += piece
            digest.update(piece)
        if sha256 is not None and not hmac.compare_digest(digest.hexdigest(), sha256):
            raise EvidenceDamaged(f"evidence {uid} does not match its SHA-256")
        return bytes(content)

    @asynccontextmanager
    async def opened(self, item: Evidence) -> AsyncIterator[bytes]:
        """Hold a whole checked file in memory for one upload; a few at once overall bound the memory."""
        async with self._reads:
            yield await self.read(item.uid, item.sha256)

    async def digest(self, uid: str) -> tuple[str, int]:
        """Return a stored file's SHA-256 and size, reading it a chunk at a time."""
        digest, size = hashlib.sha256(), 0
        async for piece in self.chunks(uid):
            digest.update(piece)
            size += len(piece)
        return digest.hexdigest(), size

    async def delete(self, uids: Iterable[str]) -> None:
        """Remove files (missing ones are fine)."""
        for uid in uids:
            await asyncio.to_thread(self._path(uid).unlink, True)

    async def reseal(self, uid: str, target: EvidenceStore) -> bool:
        """Re-encrypt one file from this store's key to `target`'s (atomically: the old file stays whole
        until the new one replaces it); False if it already opens under target, so a key rotation
        interrupted half-way is simply run again. Raises EvidenceDamaged if it opens under neither."""
        return await asyncio.to_thread(self._reseal, uid, target)

    def sweep_partial(self, *, older_than_s: float = _PARTIAL_AGE_S) -> int:
        """Delete partial files a crash left behind (an hour old: newer ones may be downloads now)."""
        removed = 0
        if not self._directory.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        for path in self._directory.glob("*.tmp"):
            with suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def _path(self, uid: str) -> Path:
        if len(uid) != 32 or any(c not in "0123456789abcdef" for c in uid):
            raise EvidenceDamaged("not an evidence uid")  # never a path outside the directory
        return self._directory / f"{uid}.bin"

    def _writer(self, uid: str) -> _SealingWriter:
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _SealingWriter(self._path(uid), self._stream_key, _associated(uid))

    def _reader(self, uid: str) -> _OpeningReader:
        return _OpeningReader(self._path(uid), self._stream_key, self._cipher, uid)

    def _opens(self, uid: str) -> bool:
        """Tell whether a file opens under this store's key (its first chunk authenticates)."""
        try:
            reader = self._reader(uid)
        except EvidenceDamaged:
            return False
        try:
            reader.next()
        except EvidenceDamaged:
            return False
        finally:
            reader.close()
        return True

    def _reseal(self, uid: str, target: EvidenceStore) -> bool:
        if target._opens(uid):
            return False
        reader = self._reader(uid)
        try:
            writer = target._writer(uid)
            try:
                while (piece := reader.next()) is not None:
                    writer.write(piece)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
        finally:
            reader.close()
        return True

    # ------------------------------------------------------------------ rows

    async def stage(
        self, conn: AsyncConnection, owner: str, saved: SavedFile, *, kind: str, file_id: str, now: datetime
    ) -> None:
        """Record a file received for the owner's draft; all but the owner sealed in one ciphertext (under a
        transient key with `transient_staging`: once its epoch is retired, no old copy of the row links the
        owner to the file, even for someone who holds the data key)."""
        details = {
            "uid": saved.uid,
            "kind": kind,
            "sha256": saved.sha256,
            "size": saved.size,
            "received_at": to_micros(now),
            "file_id": file_id,
        }
        sealed = self._cipher.encrypt_json(
            details, binding=staged_binding(owner), transient=self._transient_staging
        )
        await self.rows.stage(conn, owner, sealed)

    async def staged(self, conn: AsyncConnection, owner: str) -> list[StagedFile]:
        """Return the files staged for a person's drafts, oldest first."""
        opened = [self._open_staged(owner, row) for row in await self.rows.staged(conn, owner)]
        return [item for item in opened if item is not None]

    async def drop_staged(self, conn: AsyncConnection, owner: str) -> list[str]:
        """Delete a person's staged rows; return the uids whose files must go once the caller commits."""
        rows = await self.rows.staged(conn, owner)
        await self.rows.unstage(conn, [row.id for row in rows])
        opened = [self._open_staged(owner, row) for row in rows]
        return [item.uid for item in opened if item is not None]

    async def attach(
        self,
        conn: AsyncConnection,
        owner: str,
        entries: Sequence[Mapping[str, Any]],
        report_id: int,
        code: str,
    ) -> list[Evidence]:
        """Keep a draft's files (its `evidence` entries) with its report: fresh rows, each bound to the
        report by its MAC, and the staged rows deleted; return the kept records in the draft's order.

        The draft is the source of truth (its entries carry everything since this version); a staged row
        fills in what an older draft's entry lacks.
        """
        if not entries:
            return []
        staged = {item.uid: item for item in await self.staged(conn, owner)}
        kept: list[Evidence] = []
        for entry in entries:
            uid = str(entry["uid"])
            row = staged.get(uid)
            file_id = entry.get("file_id") or (row.file_id if row is not None else None)
            micros = entry.get("received_at")
            received_at = from_micros(int(micros)) if micros is not None else row.received_at if row else None
            if file_id is None or received_at is None:
                log.warning("evidence listed by a draft has no staged row; the report goes without it")
                continue
            record = Evidence(
                uid=uid,
                kind=str(entry["kind"]),
                sha256=str(entry["sha256"]),
                size=int(entry["size"]),
                received_at=received_at,
                # A fresh ciphertext: nothing of the staged row is copied into the kept one.
                file_ref=self._cipher.encrypt_text(str(file_id), binding=file_ref_binding(uid)),
            )
            kept.append(replace(record, mac=self.seal_row(report_id, code, record)))
        await self.rows.keep(conn, report_id, kept)
        await self.rows.unstage(conn, [staged[item.uid].row_id for item in kept if item.uid in staged])
        return kept

    def seal_row(self, report_id: int, code: str, item: Evidence) -> bytes:
        """Return the MAC binding a kept row to its report."""
        message = json.dumps(
            [report_id, code, item.uid, item.kind, item.sha256, item.size, to_micros(item.received_at)],
            separators=(",", ":"),
        ).encode()
        mac: bytes = nacl.hash.blake2b(
            message, digest_size=32, key=self._bind_key, person=_MAC_PERSON, encoder=RawEncoder
        )
        return mac

    def check_row(self, report_id: int, code: str, item: Evidence) -> str:
        """Return BOUND, MOVED (moved to another report or edited) or UNSEALED (no MAC at all)."""
        if item.mac is None:
            return UNSEALED
        return BOUND if hmac.compare_digest(item.mac, self.seal_row(report_id, code, item)) else MOVED

    async def bind_legacy(self, db: Database) -> int:
        """Bind the rows kept before revision 0010, once (the first start after it); return how many.

        Only rows up to the id the migration noted, and only once: afterwards a row without a MAC is a
        row someone wrote by hand, and stays flagged.
        """
        bound = 0
        # A plain write: a one-off rewrite of rows at start, with no outbox, audit or after-commit work.
        async with db.write() as conn:
            mark = await self._state.get(conn, LEGACY_MARK)
            if mark is None:
                return 0
            upto, after = int(mark), 0
            while after < upto and (batch := await self.rows.kept_batch(conn, after, 500)):
                for kept in batch:
                    if kept.id <= upto and kept.item.mac is None:
                        mac = self.seal_row(kept.report_id, kept.code, kept.item)
                        bound += await self.rows.set_mac(conn, kept.id, mac)
                after = batch[-1].id
            await self._state.delete(conn, LEGACY_MARK)
        if bound:
            log.info("bound %d evidence records kept before this version to their reports", bound)
        return bound

    async def rebind_rows(self, db: Database, target: EvidenceStore) -> int:
        """For a key rotation: re-encrypt each kept row's file reference and MAC under `target`'s key, and
        reseal staged rows; return how many kept rows were rebound. A row that does not check out under
        this key keeps its old MAC, so it stays flagged under the new one. Idempotent: rows that already
        check out under `target` are left alone."""
        rebound, after = 0, 0
        while True:
            # Plain writes: key rotation runs from the command line, with no Core and nothing to queue.
            async with db.write() as conn:
                batch = await self.rows.kept_batch(conn, after, 500)
                if not batch:
                    break
                after = batch[-1].id
                for kept in batch:
                    item = kept.item
                    if target.check_row(kept.report_id, kept.code, item) == BOUND:
                        continue
                    if self.check_row(kept.report_id, kept.code, item) != BOUND:
                        continue
                    file_id = self._cipher.decrypt_text(item.file_ref, binding=file_ref_binding(item.uid))
                    ref = target._cipher.encrypt_text(file_id, binding=file_ref_binding(item.uid))
                    mac = target.seal_row(kept.report_id, kept.code, item)
                    rebound += await self.rows.rebind(conn, kept.id, ref, mac)
        async with db.write() as conn:  # plain, as above
            for owner, row in await self.rows.all_staged(conn):
                opened = self._open_staged(owner, row)
                if opened is not None and target._open_staged(owner, row) is None:
                    details = {
                        "uid": opened.uid,
                        "kind": opened.kind,
                        "sha256": opened.sha256,
                        "size": opened.size,
                        "received_at": to_micros(opened.received_at),
                        "file_id": opened.file_id,
                    }
                    sealed = target._cipher.encrypt_json(
                        details, binding=staged_binding(owner), transient=target._transient_staging
                    )
                    await self.rows.reseal_staged(conn, row.id, sealed)
        return rebound

    def _open_staged(self, owner: str, row: StagedRow) -> StagedFile | None:
        try:
            if row.details.startswith(b"{"):
                # Moved by migration 0010, which had no key: clear, as the old row was.
                data = json.loads(row.details)
                ref = base64.b64decode(data["file_ref"])
                file_id = self._cipher.decrypt_text(ref, binding=file_ref_binding(data["uid"]))
            else:
                data = self._cipher.decrypt_json(row.details, binding=staged_binding(owner))
                file_id = data["file_id"]
            return StagedFile(
                row_id=row.id,
                uid=str(data["uid"]),
                kind=str(data["kind"]),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                received_at=from_micros(int(data["received_at"])),
                file_id=str(file_id),
            )
        except (DecryptionError, ValueError, KeyError, TypeError):
            log.warning("staged evidence row %d does not open; it is ignored", row.id)
            return None


class Upload:
    """One file being received: checks every chunk against the size limit, the quotas and the floor."""

    def __init__(self, store: EvidenceStore, person_used: int, total_used: int, *, unlimited: bool = False):
        self._store = store
        self._person_used = person_used
        self._total_used = total_used
        self._unlimited = unlimited
        self.saved: SavedFile | None = None
        self.kept = False

    def keep(self) -> None:
        """Say the file's row is committed: the file stays when the `receiving` block ends."""
        self.kept = True

    def admit(self, size: int) -> None:
        """Refuse politely if a file of `size` bytes would pass the size limit or a quota."""
        largest = self._store.limits.file_bytes
        if largest is not None and size > largest:
            raise EvidenceRefused("report.file_too_big", limit=largest // MB)
        if self._unlimited:
            return
        limits = self._store.limits
        if self._person_used + size > limits.per_person_bytes:
            raise EvidenceRefused("evidence.person_quota", limit=limits.per_person_bytes // MB)
        if self._total_used + self._store.reserved_by_others(self) + size > limits.total_bytes:
            raise EvidenceRefused("evidence.total_quota")

    def check_floor(self, coming: int) -> None:
        """Refuse if the free space, less `coming` bytes still to write, is under the floor (blocking)."""
        if not self._unlimited and self._store.free() - coming < self._store.floor():
            raise EvidenceRefused("evidence.disk_full")

    async def save(self, chunks: AsyncIterable[bytes]) -> SavedFile:
        """Encrypt the stream to disk as it comes; a limit crossed midway deletes the partial file."""
        uid = secrets.token_hex(16)
        writer = await asyncio.to_thread(self._store._writer, uid)
        checked = 0
        try:
            async for data in chunks:
                self.admit(writer.size + len(data))
                await asyncio.to_thread(writer.write, data)
                if not self._unlimited:
                    self._store._reserved[id(self)] = max(self._store._reserved.get(id(self), 0), writer.size)
                if writer.size - checked >= _FLOOR_CHECK_BYTES:
                    checked = writer.size
                    await asyncio.to_thread(self.check_floor, 0)
            digest = await asyncio.to_thread(writer.commit)
        except BaseException:
            writer.abort()  # synchronous: it must happen even while the task is being cancelled
            raise
        finally:
            closing = getattr(chunks, "aclose", None)
            if closing is not None:
                await closing()
        self.saved = SavedFile(uid=uid, sha256=digest, size=writer.size)
        return self.saved


class _SealingWriter:
    """Writes one file in format 0x02 to a temporary name, renamed into place by `commit` (blocking)."""

    def __init__(self, final: Path, key: bytes, associated: bytes) -> None:
        self._final = final
        self._temporary = final.with_name(f"{final.stem}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self._file: BinaryIO = os.fdopen(os.open(self._temporary, flags, 0o600), "wb")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        header: bytes = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._associated = associated
        self._pending = bytearray()
        self._digest = hashlib.sha256()
        self.size = 0
        self._file.write(_V2 + header)

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self.size += len(data)
        self._pending += data
        # Strictly more than a chunk: the last chunk (tagged FINAL) is written by commit, never empty-handed.
        while len(self._pending) > CHUNK:
            piece = bytes(self._pending[:CHUNK])
            del self._pending[:CHUNK]
            self._file.write(self._push(piece, _TAG_MESSAGE))

    def commit(self) -> str:
        self._file.write(self._push(bytes(self._pending), _TAG_FINAL))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # The row that names this file is committed after it; a rename makes the file whole or absent.
        os.replace(self._temporary, self._final)
        _fsync_directory(self._final.parent)
        return self._digest.hexdigest()

    def abort(self) -> None:
        with suppress(OSError):
            self._file.close()
        self._temporary.unlink(missing_ok=True)

    def _push(self, piece: bytes, tag: int) -> bytes:
        sealed: bytes = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, piece, self._associated, tag
        )
        return sealed


class _OpeningReader:
    """Reads one file of either format a chunk at a time (blocking); raises EvidenceDamaged."""

    def __init__(self, path: Path, key: bytes, cipher: Cipher, uid: str) -> None:
        try:
            self._file: BinaryIO = path.open("rb")
        except OSError:
            raise EvidenceDamaged(f"evidence file {uid} is missing") from None
        self._legacy: memoryview | None = None
        self._offset = 0
        self._done = False
        self._associated = _associated(uid)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        try:
            version = self._file.read(1)
            if version == _V2:
                header = self._file.read(_HEADER_BYTES)
                if len(header) != _HEADER_BYTES:
                    raise EvidenceDamaged(f"evidence file {uid} is cut short")
                sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, key)
            elif version == _V1:
                # Written whole before streaming existed: at most 20 MB, opened in one piece.
                sealed = version + self._file.read()
                self._legacy = memoryview(cipher.decrypt(sealed, binding=evidence_file_binding(uid)))
            else:
                raise EvidenceDamaged(f"evidence file {uid} has an unknown format")
        except DecryptionError:
            self.close()
            raise EvidenceDamaged(f"evidence file {uid} does not open under this key") from None
        except BaseException:
            self.close()
            raise

    def next(self) -> bytes | None:
        """Return the next piece of plaintext, None after the last."""
        if self._legacy is not None:
            piece = bytes(self._legacy[self._offset : self._offset + CHUNK])
            self._offset += len(piece)
            return piece or None
        if self._done:
            return None
        block = self._file.read(CHUNK + _ABYTES)
        if not block:
            raise EvidenceDamaged("evidence file is cut short")
        try:
            piece, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, block, self._associated
            )
        except nacl.exceptions.CryptoError:
            raise EvidenceDamaged("evidence file does not open under this key and uid") from None
        if tag == _TAG_FINAL:
            if self._file.read(1):
                raise EvidenceDamaged("evidence file has data after its end")
            self._done = True
        return bytes(piece)

    def close(self) -> None:
        self._file.close()


async def download_chunks(
    file_path: str,
    *,
    read_timeout: float = 60.0,
    proxy_url: SecretStr | None = None,
    local_mode: bool = False,
) -> AsyncGenerator[bytes, None]:
    """Stream a file Telegram handed out (the URL python-telegram-bot built, or in `local_mode` a local
    Bot API server's absolute path) a chunk at a time; no more than a chunk or two is ever held in memory.
    The URL is fetched through the proxy, if one is set, like every other Bot API request."""
    if not file_path.startswith(("http://", "https://")):
        # Only a local-mode server hands out paths; from any other, a path is never read from this disk.
        if not local_mode or not Path(file_path).is_absolute():
            raise DownloadFailed("Telegram gave a file path, and JARCHY_API_LOCAL_MODE is off")
        local = await asyncio.to_thread(Path(file_path).open, "rb")
        try:
            while piece := await asyncio.to_thread(local.read, CHUNK):
                yield piece
        finally:
            local.close()
        return
    timeout = aiohttp.ClientTimeout(sock_connect=10.0, sock_read=read_timeout)
    try:
        async with (
            # aiohttp's default pool size, as before the proxy: one connection is all a download opens.
            aiohttp.ClientSession(timeout=timeout, connector=connector(proxy_url, limit=100)) as session,
            session.get(file_path, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise DownloadFailed(f"Telegram answered {response.status} to the file download")
            async for piece in response.content.iter_chunked(CHUNK):
                yield piece
    except (aiohttp.ClientError, TimeoutError) as error:
        # aiohttp's messages include the URL, and the URL includes the bot token.
        raise DownloadFailed(f"the file download failed ({type(error).__name__})") from None


async def verify_evidence(
    db: Database, store: EvidenceStore, *, files: bool = False, batch: int = 500
) -> EvidenceAudit:
    """Check every kept evidence row's MAC against its report (moved or edited rows, rows without a MAC);
    with `files`, also that each file exists, opens under the key and its uid, and matches its SHA-256
    and size (reads every file, a chunk at a time). For `jarchy audit verify`."""
    problems: list[EvidenceProblem] = []
    checked, after = 0, 0
    while True:
        async with db.read() as conn:
            rows = await store.rows.kept_batch(conn, after, batch)
        if not rows:
            break
        after = rows[-1].id
        for kept in rows:
            checked += 1
            item = kept.item
            verdict = store.check_row(kept.report_id, kept.code, item)
            if verdict != BOUND:
                problems.append(EvidenceProblem(kept.code, item.uid, item.sha256, verdict))
                continue
            if files:
                try:
                    digest, size = await store.digest(item.uid)
                except EvidenceDamaged as damaged:
                    missing = "missing" in str(damaged)
                    problems.append(
                        EvidenceProblem(kept.code, item.uid, item.sha256, "missing" if missing else "damaged")
                    )
                    continue
                if digest != item.sha256 or size != item.size:
                    problems.append(EvidenceProblem(kept.code, item.uid, item.sha256, "damaged"))
    return EvidenceAudit(checked, problems)


def _associated(uid: str) -> bytes:
    return _V2 + evidence_file_binding(uid).encode()


def _fsync_directory(directory: Path) -> None:
    # The rename itself must survive a power cut, or the committed row would name a file that is gone.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
