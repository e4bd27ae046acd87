"""Evidence files and rows: streamed and sealed chunk by chunk, bounded in memory and on disk, staged apart
from the reports that keep them, bound to their report, resealed under a new key, migrated from 0009."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.security import Cipher, DataKey, create_key_file
from bot.security.bindings import file_ref_binding
from bot.services.reports.evidence import (
    BOUND,
    CHUNK,
    LEGACY_MARK,
    MB,
    MOVED,
    UNSEALED,
    EvidenceDamaged,
    EvidenceLimits,
    EvidenceRefused,
    EvidenceStore,
    SavedFile,
    verify_evidence,
)
from storage import migrations
from storage.database import Database
from storage.reports import NewReport, ReportRepository
from storage.state import StateRepository

NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
OWNER = "p" * 64


def piece(index: int, size: int) -> bytes:
    """Deterministic, incompressible bytes for one piece of a large test file."""
    return hashlib.shake_256(index.to_bytes(4, "big")).digest(size)


async def stream(total: int, size: int = 50_000) -> AsyncIterator[bytes]:
    """Yield `total` bytes in pieces of `size` (not a multiple of the store's chunk)."""
    sent, index = 0, 0
    while sent < total:
        part = piece(index, min(size, total - sent))
        sent += len(part)
        index += 1
        yield part


async def one(content: bytes) -> AsyncIterator[bytes]:
    """Yield one piece."""
    yield content


def expected_digest(total: int, size: int = 50_000) -> str:
    digest, sent, index = hashlib.sha256(), 0, 0
    while sent < total:
        part = piece(index, min(size, total - sent))
        digest.update(part)
        sent += len(part)
        index += 1
    return digest.hexdigest()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def store(tmp_path: Path, key: DataKey) -> EvidenceStore:
    return EvidenceStore(tmp_path / "evidence", key)


async def new_report(db: Database, cipher: Cipher, code: str) -> int:
    async with db.write() as conn:
        return await ReportRepository().create(
            conn,
            NewReport(
                code=code,
                kind="report",
                category="detention",
                occurred_at=None,
                occurred_precision=None,
                region=None,
                body=cipher.encrypt_json({"text": "x"}, binding=f"test:{code}"),
                contactable=False,
                reporter=None,
                contact_chat=None,
                submit_key=os.urandom(8).hex(),
            ),
            NOW,
        )


# ---------------------------------------------------------------------- the file format


async def test_a_20_mb_file_round_trips_in_chunks_with_bounded_memory(store: EvidenceStore) -> None:
    total = 20 * MB
    tracemalloc.start()
    try:
        saved = await store.save(stream(total))
        _, peak_save = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest, size, largest = hashlib.sha256(), 0, 0
        async for part in store.chunks(saved.uid):
            digest.update(part)
            size += len(part)
            largest = max(largest, len(part))
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert saved.size == size == total
    assert saved.sha256 == digest.hexdigest() == expected_digest(total)
    assert largest <= CHUNK
    # Never the whole file, nor a large part of it, in memory: a few chunks at most.
    assert peak_save < 2 * MB, peak_save
    assert peak_read < 2 * MB, peak_read
    path = store._directory / f"{saved.uid}.bin"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes()[:1] == b"\x02"
    assert files_in(store._directory) == [f"{saved.uid}.bin"]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
async def test_sizes_around_the_chunk_boundary_round_trip(store: EvidenceStore, size: int) -> None:
    content = os.urandom(size)
    saved = await store.save(one(content))
    assert await store.read(saved.uid, saved.sha256) == content
    assert saved.sha256 == hashlib.sha256(content).hexdigest()


async def test_files_of_the_single_shot_format_stay_readable(store: EvidenceStore, key: DataKey) -> None:
    content = b"%PDF-1.4 a summons written before streaming"
    uid = "ab" * 16
    store._directory.mkdir(parents=True)
    (store._directory / f"{uid}.bin").write_bytes(
        Cipher(key).encrypt(content, binding=f"evidence.file:{uid}")
    )
    assert await store.read(uid, hashlib.sha256(content).hexdigest()) == content


async def test_a_renamed_cut_or_extended_file_does_not_open(store: EvidenceStore) -> None:
    first = await store.save(one(os.urandom(3 * CHUNK + 5)))
    second = await store.save(one(b"another file"))
    directory = store._directory
    original = (directory / f"{first.uid}.bin").read_bytes()
    # Another file's content under this uid (a file swapped between two reports).
    (directory / f"{second.uid}.bin").write_bytes(original)
    with pytest.raises(EvidenceDamaged):
        await store.read(second.uid)
    # Cut after a whole chunk: every chunk authenticates, but the final one is missing.
    (directory / f"{first.uid}.bin").write_bytes(original[: 1 + 24 + CHUNK + 17])
    with pytest.raises(EvidenceDamaged):
        await store.read(first.uid)
    (directory / f"{first.uid}.bin").write_bytes(original + b"x")
    with pytest.raises(EvidenceDamaged):
        await store.read(first.uid)
    (directory / f"{first.uid}.bin").write_bytes(original)
    with pytest.raises(EvidenceDamaged):
        await store.read(first.uid, sha256="0" * 64)
    with pytest.raises(EvidenceDamaged):
        await store.read("../../etc/passwd")


# ---------------------------------------------------------------------- reseal


async def test_reseal_moves_a_file_to_the_new_key_once(tmp_path: Path, key: DataKey) -> None:
    directory = tmp_path / "evidence"
    old, new = EvidenceStore(directory, key), EvidenceStore(directory, create_key_file(tmp_path / "new.key"))
    content = os.urandom(2 * CHUNK + 100)
    saved = await old.save(one(content))
    assert await old.reseal(saved.uid, new) is True
    assert await new.read(saved.uid, saved.sha256) == content
    with pytest.raises(EvidenceDamaged):
        await old.read(saved.uid)
    # Idempotent: an interrupted rotation runs again and skips what is done.
    assert await old.reseal(saved.uid, new) is False
    assert files_in(directory) == [f"{saved.uid}.bin"]


async def test_reseal_upgrades_an_old_format_file_and_refuses_a_stranger(
    tmp_path: Path, key: DataKey
) -> None:
    directory = tmp_path / "evidence"
    directory.mkdir()
    old, new = EvidenceStore(directory, key), EvidenceStore(directory, create_key_file(tmp_path / "new.key"))
    uid = "cd" * 16
    (directory / f"{uid}.bin").write_bytes(Cipher(key).encrypt(b"old photo", binding=f"evidence.file:{uid}"))
    assert await old.reseal(uid, new) is True
    assert (directory / f"{uid}.bin").read_bytes()[:1] == b"\x02"
    assert await new.read(uid) == b"old photo"
    stranger = EvidenceStore(directory, create_key_file(tmp_path / "other.key"))
    with pytest.raises(EvidenceDamaged):
        await stranger.reseal(uid, EvidenceStore(tmp_path / "elsewhere", key))
    with pytest.raises(EvidenceDamaged):
        await old.reseal("ef" * 16, new)  # no such file


# ---------------------------------------------------------------------- quotas and the floor


def limited(
    tmp_path: Path,
    key: DataKey,
    free: list[int] | None = None,
    *,
    per_person_bytes: int = 10 * MB,
    total_bytes: int = 100 * MB,
    floor_bytes: int = 0,
    downloads: int = 3,
) -> EvidenceStore:
    """A store with small bounds and a free-space reading the test controls."""
    bounds = EvidenceLimits(per_person_bytes, total_bytes, floor_bytes, downloads)
    space = free if free is not None else [10**12]
    return EvidenceStore(tmp_path / "evidence", key, limits=bounds, free_space=lambda _path: space[0])


async def receive(
    store: EvidenceStore, db: Database, owner: str, size: int, declared: bool = True
) -> SavedFile:
    """Receive a file and stage it, as the report service does."""
    async with store.receiving(db, owner, size if declared else None) as upload:
        saved = await upload.save(stream(size))
        async with db.write() as conn:
            await store.stage(conn, owner, saved, kind="video", file_id=f"F-{saved.uid}", now=NOW)
        upload.keep()
    return saved


async def test_the_per_person_quota_counts_every_draft_and_refuses_politely(
    tmp_path: Path, key: DataKey, db: Database
) -> None:
    store = limited(tmp_path, key, per_person_bytes=3 * MB)
    first = await receive(store, db, OWNER, 2 * MB)
    # Declared too big: refused before a byte is downloaded.
    with pytest.raises(EvidenceRefused) as declared:
        await receive(store, db, OWNER, 2 * MB)
    assert (declared.value.key, declared.value.params) == ("evidence.person_quota", {"limit": 3})
    # Not declared: refused while streaming, and the partial file is gone.
    with pytest.raises(EvidenceRefused) as streaming:
        await receive(store, db, OWNER, 2 * MB, declared=False)
    assert streaming.value.key == "evidence.person_quota"
    assert files_in(store._directory) == [f"{first.uid}.bin"]
    # Someone else still has their own room.
    await receive(store, db, "q" * 64, 2 * MB)
    async with db.write() as conn:
        dropped = await store.drop_staged(conn, OWNER)
    assert dropped == [first.uid]


async def test_the_overall_quota_counts_kept_and_staged_files(
    tmp_path: Path, key: DataKey, db: Database, cipher: Cipher
) -> None:
    store = limited(tmp_path, key, total_bytes=5 * MB)
    kept = await receive(store, db, "a" * 64, 2 * MB)
    report_id = await new_report(db, cipher, "R-AAAAA")
    async with db.write() as conn:
        await store.attach(conn, "a" * 64, [_entry(kept)], report_id, "R-AAAAA")
    await receive(store, db, "b" * 64, 2 * MB)
    with pytest.raises(EvidenceRefused) as refused:
        await receive(store, db, "c" * 64, 2 * MB, declared=False)
    assert refused.value.key == "evidence.total_quota"
    assert len(files_in(store._directory)) == 2


async def test_the_floor_refuses_before_and_while_streaming_and_leaves_nothing(
    tmp_path: Path, key: DataKey, db: Database
) -> None:
    free = [100 * MB]
    store = limited(tmp_path, key, free, floor_bytes=50 * MB)
    free[0] = 40 * MB
    with pytest.raises(EvidenceRefused) as before:
        await receive(store, db, OWNER, MB)
    assert before.value.key == "evidence.disk_full"

    free[0] = 60 * MB

    async def shrinking() -> AsyncIterator[bytes]:
        async for part in stream(8 * MB):
            yield part
            free[0] -= len(part) * 4  # someone else fills the disk meanwhile

    with pytest.raises(EvidenceRefused) as midway:
        async with store.receiving(db, OWNER, None) as upload:
            await upload.save(shrinking())
    assert midway.value.key == "evidence.disk_full"
    assert files_in(store._directory) == []
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM evidence_staged"))).scalar() == 0


async def test_the_floor_grows_with_the_database(tmp_path: Path, key: DataKey) -> None:
    database = tmp_path / "jarchy.db"
    database.write_bytes(b"x" * 4096)
    store = EvidenceStore(
        tmp_path / "evidence", key, limits=EvidenceLimits(floor_bytes=MB, database_files=(database,))
    )
    assert store.floor() == MB + 4096


async def test_a_file_over_the_bot_api_limit_is_refused(tmp_path: Path, key: DataKey, db: Database) -> None:
    store = limited(tmp_path, key, per_person_bytes=100 * MB)
    with pytest.raises(EvidenceRefused) as declared:
        await receive(store, db, OWNER, 21 * MB)
    assert (declared.value.key, declared.value.params) == ("report.file_too_big", {"limit": 20})
    with pytest.raises(EvidenceRefused):
        await receive(store, db, OWNER, 20 * MB + 1, declared=False)
    assert files_in(store._directory) == []


async def test_downloads_are_bounded_overall_and_one_at_a_time_per_person(
    tmp_path: Path, key: DataKey, db: Database
) -> None:
    store = limited(tmp_path, key, downloads=1)
    release, entered = asyncio.Event(), asyncio.Event()
    running: list[str] = []
    most = 0

    async def held(owner: str) -> None:
        nonlocal most
        async with store.receiving(db, owner, 10) as upload:
            running.append(owner)
            entered.set()
            most = max(most, len(running))
            await release.wait()
            await upload.save(one(b"0123456789"))
            running.remove(owner)

    first = asyncio.create_task(held("a" * 64))
    second = asyncio.create_task(held("a" * 64))  # the same person: waits for the first
    third = asyncio.create_task(held("b" * 64))  # waits for the one slot
    # The first takes the slot once its staging row is written (slower on a loaded machine or PostgreSQL).
    await asyncio.wait_for(entered.wait(), timeout=10)
    await asyncio.sleep(0.1)  # and nobody else gets in beside it
    assert running == ["a" * 64]
    fourth = asyncio.create_task(held("c" * 64))
    await asyncio.sleep(0.2)  # the fourth is in the short queue
    # A short queue only (twice the slots: third and fourth); past it "send it again in a minute".
    with pytest.raises(EvidenceRefused) as busy:
        await held("d" * 64)
    assert busy.value.key == "evidence.busy"
    release.set()
    await asyncio.gather(first, second, third, fourth)
    assert most == 1
    assert files_in(store._directory) == []  # none kept: each was deleted when its block ended


# ---------------------------------------------------------------------- staging, binding, verifying


def _entry(saved: SavedFile, **extra: object) -> dict[str, object]:
    return {"uid": saved.uid, "kind": "video", "sha256": saved.sha256, "size": saved.size, **extra}


async def test_staged_rows_keep_only_the_owner_in_clear_and_kept_rows_never_name_them(
    tmp_path: Path, key: DataKey, db: Database, cipher: Cipher
) -> None:
    store = limited(tmp_path, key)
    saved = await receive(store, db, OWNER, 1000)
    async with db.read() as conn:
        (owner, details) = (await conn.execute(text("SELECT owner, details FROM evidence_staged"))).one()
    assert owner == OWNER
    for clear in (saved.uid.encode(), saved.sha256.encode(), b"F-"):
        assert clear not in details
    report_id = await new_report(db, cipher, "R-BBBBB")
    async with db.write() as conn:
        kept = await store.attach(conn, OWNER, [_entry(saved)], report_id, "R-BBBBB")
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM evidence_staged"))).scalar() == 0
        columns = [r[1] for r in await conn.execute(text("PRAGMA table_info(evidence)"))]
        rows = (await conn.execute(text("SELECT * FROM evidence"))).all()
    assert "owner" not in columns
    assert len(rows) == 1 and OWNER not in str(rows[0])
    assert [k.uid for k in kept] == [saved.uid]
    async with db.read() as conn:
        (item,) = await store.rows.for_report(conn, report_id)
    assert cipher.decrypt_text(item.file_ref, binding=file_ref_binding(saved.uid)) == f"F-{saved.uid}"
    assert store.check_row(report_id, "R-BBBBB", item) == BOUND


async def test_a_moved_file_and_an_edited_row_are_found(
    tmp_path: Path, key: DataKey, db: Database, cipher: Cipher
) -> None:
    store = limited(tmp_path, key)
    a_id, b_id = await new_report(db, cipher, "R-CCCCC"), await new_report(db, cipher, "R-DDDDD")
    files = [await receive(store, db, OWNER, size) for size in (1000, 2000, 3000, 4000)]
    async with db.write() as conn:
        await store.attach(conn, OWNER, [_entry(f) for f in files[:3]], a_id, "R-CCCCC")
        await store.attach(conn, OWNER, [_entry(files[3])], b_id, "R-DDDDD")
    audit = await verify_evidence(db, store, files=True)
    assert audit.ok and audit.checked == 4
    moved, edited, unsealed = files[0].uid, files[1].uid, files[2].uid
    async with db.write() as conn:
        await conn.execute(text("UPDATE evidence SET report_id = :b WHERE uid = :u"), {"b": b_id, "u": moved})
        await conn.execute(text("UPDATE evidence SET size = size + 1 WHERE uid = :u"), {"u": edited})
        await conn.execute(text("UPDATE evidence SET mac = NULL WHERE uid = :u"), {"u": unsealed})
    async with db.read() as conn:
        in_b = {e.uid: store.check_row(b_id, "R-DDDDD", e) for e in await store.rows.for_report(conn, b_id)}
        in_a = {e.uid: store.check_row(a_id, "R-CCCCC", e) for e in await store.rows.for_report(conn, a_id)}
    assert in_b == {moved: MOVED, files[3].uid: BOUND}
    assert in_a == {edited: MOVED, unsealed: UNSEALED}
    (store._directory / f"{files[3].uid}.bin").write_bytes(b"\x02" + b"\x00" * 100)
    audit = await verify_evidence(db, store, files=True)
    assert sorted((p.uid, p.problem) for p in audit.problems) == sorted(
        [(moved, "moved"), (edited, "moved"), (unsealed, "unsealed"), (files[3].uid, "damaged")]
    )
    # Without reading the files, the rows alone.
    assert len((await verify_evidence(db, store)).problems) == 3


# ---------------------------------------------------------------------- migration 0010


async def test_migration_moves_staged_rows_and_kept_rows_are_bound_once(
    tmp_path: Path, key: DataKey, cipher: Cipher
) -> None:
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await migrations.upgrade(db, "0009")
        staged_ref = cipher.encrypt_text("FILE-STAGED", binding=file_ref_binding("11" * 16))
        kept_ref = cipher.encrypt_text("FILE-KEPT", binding=file_ref_binding("22" * 16))
        micros = int(NOW.timestamp() * 1_000_000)
        async with db.write() as conn:
            await conn.execute(
                text(
                    "INSERT INTO reports (code, kind, category, body, contactable, status, submit_key, "
                    "created_at, updated_at) VALUES ('R-EEEEE', 'report', 'other', x'00', 0, 'new', 'k', "
                    ":at, :at)"
                ),
                {"at": micros},
            )
            insert = (
                "INSERT INTO evidence (uid, report_id, owner, kind, sha256, size, received_at, file_ref) "
                "VALUES (:uid, :report, :owner, 'photo', :sha, 10, :at, :ref)"
            )
            await conn.execute(
                text(insert),
                {
                    "uid": "11" * 16,
                    "report": None,
                    "owner": OWNER,
                    "sha": "a" * 64,
                    "at": micros,
                    "ref": staged_ref,
                },
            )
            await conn.execute(
                text(insert),
                {
                    "uid": "22" * 16,
                    "report": 1,
                    "owner": None,
                    "sha": "b" * 64,
                    "at": micros,
                    "ref": kept_ref,
                },
            )
        await migrations.upgrade(db)
        store = EvidenceStore(tmp_path / "evidence", key)
        async with db.read() as conn:
            (staged,) = await store.staged(conn, OWNER)
            (kept,) = await store.rows.for_report(conn, 1)
            assert await StateRepository().get(conn, LEGACY_MARK) == "2"  # the last kept row's id
        assert (staged.uid, staged.file_id, staged.size, staged.received_at) == (
            "11" * 16,
            "FILE-STAGED",
            10,
            NOW,
        )
        assert kept.mac is None and store.check_row(1, "R-EEEEE", kept) == UNSEALED
        assert await store.bind_legacy(db) == 1
        assert await store.bind_legacy(db) == 0  # once only
        async with db.read() as conn:
            (kept,) = await store.rows.for_report(conn, 1)
            assert await StateRepository().get(conn, LEGACY_MARK) is None
        assert store.check_row(1, "R-EEEEE", kept) == BOUND
        # The migrated staged row is kept with its report like any other (the old draft lacks file_id).
        async with db.write() as conn:
            (moved,) = await store.attach(
                conn,
                OWNER,
                [{"uid": staged.uid, "kind": "photo", "sha256": "a" * 64, "size": 10}],
                1,
                "R-EEEEE",
            )
        assert cipher.decrypt_text(moved.file_ref, binding=file_ref_binding(moved.uid)) == "FILE-STAGED"
        # A row without a MAC written after the first start stays flagged.
        async with db.write() as conn:
            await conn.execute(text("UPDATE evidence SET mac = NULL WHERE uid = :u"), {"u": "11" * 16})
        assert await store.bind_legacy(db) == 0
        assert [p.problem for p in (await verify_evidence(db, store)).problems] == ["unsealed"]
    finally:
        await db.close()


async def test_a_key_rotation_rebinds_rows_and_keeps_tampered_ones_flagged(
    tmp_path: Path, key: DataKey, db: Database, cipher: Cipher
) -> None:
    old = limited(tmp_path, key)
    new_key = create_key_file(tmp_path / "new.key")
    new = EvidenceStore(tmp_path / "evidence", new_key)
    report_id = await new_report(db, cipher, "R-FFFFF")
    files = [await receive(old, db, OWNER, size) for size in (100, 200)]
    async with db.write() as conn:
        await old.attach(conn, OWNER, [_entry(files[0])], report_id, "R-FFFFF")
        await conn.execute(text("UPDATE evidence SET size = 7 WHERE uid = :u"), {"u": files[0].uid})
    for saved in files:
        assert await old.reseal(saved.uid, new) is True
    async with db.write() as conn:
        await old.attach(conn, OWNER, [_entry(files[1])], report_id, "R-FFFFF")
    assert await old.rebind_rows(db, new) == 1
    assert await old.rebind_rows(db, new) == 0  # run again after an interruption: nothing left to do
    async with db.read() as conn:
        checks = {
            e.uid: new.check_row(report_id, "R-FFFFF", e) for e in await new.rows.for_report(conn, report_id)
        }
        (good,) = [e for e in await new.rows.for_report(conn, report_id) if e.uid == files[1].uid]
    assert checks == {files[0].uid: MOVED, files[1].uid: BOUND}
    ref = Cipher(new_key).decrypt_text(good.file_ref, binding=file_ref_binding(good.uid))
    assert ref == f"F-{good.uid}"
    audit = await verify_evidence(db, new, files=True)
    assert [(p.uid, p.problem) for p in audit.problems] == [(files[0].uid, "moved")]
