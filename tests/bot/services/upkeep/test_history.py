"""Transient keys and the scrub: old copies of short-lived rows stop decrypting, live ones never do."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from bot.runtime.clock import Clock
from bot.runtime.instance import DataDirInUse, lock_transient_keys
from bot.security import Cipher, DataKey, DecryptionError, KeyFileError
from bot.security.bindings import draft_binding, update_binding
from bot.security.owner_tags import _KNOWN_AT_MOST, OwnerTags
from bot.security.transient import RETIRED_GRACE_S, SLOTS, TAG_GRACE_S, NoFreeSlot, TransientKeys
from bot.services.upkeep.history import HistoryScrubber
from bot.services.upkeep.key_rotation import _exclusive
from bot.wiring import build_limiter, open_services
from storage.drafts import DraftRepository
from tests.conftest import make_settings


def test_a_retired_epoch_no_longer_decrypts_and_its_slot_is_overwritten_in_place(
    tmp_path: Path, key: DataKey
) -> None:
    path = tmp_path / "transient.keys"
    now = [0.0]
    keys = TransientKeys(path, key, monotonic=lambda: now[0])
    cipher = Cipher(key, keys)
    old = cipher.encrypt(b"raw update", binding="b", transient=True)
    first = keys.current
    size = path.stat().st_size
    inode = path.stat().st_ino
    second = keys.begin_epoch()
    assert cipher.decrypt(old, binding="b") == b"raw update"  # both kept until retired
    assert keys.retire_all_but(second) == [first]
    # A value read just before the scrub still opens in this process for a while; never from the disk.
    assert cipher.decrypt(old, binding="b") == b"raw update"
    now[0] += RETIRED_GRACE_S + 1
    with pytest.raises(DecryptionError):
        cipher.decrypt(old, binding="b")
    # Same file, same size: the slot was overwritten, not the file replaced (which would leave the old
    # blocks free on the disk).
    assert path.stat().st_size == size and path.stat().st_ino == inode
    reopened = TransientKeys(path, key)
    assert reopened.epochs() == [second]
    with pytest.raises(DecryptionError):
        Cipher(key, reopened).decrypt(old, binding="b")


def test_owner_tags_are_kept_only_while_their_key_is(tmp_path: Path, key: DataKey) -> None:
    # Tags are kept in memory between steps; a retired key's tag beside its pseudonym would tie the
    # WAL's old rows to the person after the key itself is forgotten.
    now = [0.0]
    keys = TransientKeys(tmp_path / "transient.keys", key, monotonic=lambda: now[0])
    owners = OwnerTags(Cipher(key, keys))
    first = owners.current("p-1")
    assert owners.tags("p-1") == [first, "p-1"]
    second = keys.begin_epoch()
    renewed = owners.tags("p-1")
    assert renewed[0] != first and renewed[1:] == [first, "p-1"]
    keys.retire_all_but(second)
    now[0] += RETIRED_GRACE_S + 1
    assert owners.tags("p-1") == [renewed[0], "p-1"]
    remembered = [tag for known in owners._known.values() for tag in known.values()]
    assert first not in remembered and renewed[0] in remembered
    # Bounded in all, however many keys are live (one per scrub within the grace, for minutes under load).
    for _ in range(SLOTS - 1):
        keys.begin_epoch()
    for person in range(_KNOWN_AT_MOST):
        owners.tags(f"p-{person}")
    assert sum(len(known) for known in owners._known.values()) <= _KNOWN_AT_MOST
    assert owners.tags("p-1") == owners.tags("p-1")


def test_a_person_is_looked_up_under_recently_retired_keys_only(tmp_path: Path, key: DataKey) -> None:
    # A scrub a second under load: counting every key within the 300 s decryption grace made each owner
    # lookup hash and bind hundreds of tags. Decryption keeps the long grace; tags need only the recent keys.
    now = [0.0]
    keys = TransientKeys(tmp_path / "transient.keys", key, monotonic=lambda: now[0])
    cipher = Cipher(key, keys)
    owners = OwnerTags(cipher)
    sealed = cipher.encrypt(b"draft", binding="b", transient=True)
    for _ in range(100):
        keys.retire_all_but(keys.begin_epoch())
        now[0] += 1.0
    tags = owners.tags("p-1")
    assert len(tags) <= TAG_GRACE_S + 2  # the current key, those retired within TAG_GRACE_S, the clear value
    assert tags[0] == owners.current("p-1") and tags[-1] == "p-1"
    assert cipher.decrypt(sealed, binding="b") == b"draft"  # retired 100 s ago: still opens in memory
    now[0] += TAG_GRACE_S
    assert owners.tags("p-1") == [owners.current("p-1"), "p-1"]
    # A peer's key that is no longer lent (its shares sealed to an epoch retired here) may still be the
    # one it writes under until its next sync: it counts for the whole grace.
    keys.set_peer_keys("peer", {7: b"k" * 32})
    keys.set_peer_keys("peer", {})
    now[0] += TAG_GRACE_S + 1
    assert len(owners.tags("p-1")) == 3


def test_data_key_fields_are_not_transient_and_other_keys_cannot_open_slots(
    tmp_path: Path, key: DataKey
) -> None:
    keys = TransientKeys(tmp_path / "transient.keys", key)
    cipher = Cipher(key, keys)
    lasting = cipher.encrypt(b"report body", binding="b")
    assert Cipher.epoch_of(lasting) is None
    keys.retire_all_but(keys.begin_epoch())
    assert cipher.decrypt(lasting, binding="b") == b"report body"
    stranger = TransientKeys(tmp_path / "transient.keys", DataKey(bytes(32)))
    assert keys.current not in stranger.epochs()


def test_no_live_key_is_ever_overwritten_when_the_slots_are_full(tmp_path: Path, key: DataKey) -> None:
    keys = TransientKeys(tmp_path / "transient.keys", key)
    for _ in range(SLOTS - 1):
        keys.begin_epoch()
    with pytest.raises(NoFreeSlot):
        keys.begin_epoch()
    assert len(keys.epochs()) == SLOTS


async def test_a_scrub_rewrites_live_rows_retires_old_keys_and_truncates_the_wal(
    tmp_path: Path, clock: Clock
) -> None:
    settings = make_settings(tmp_path)
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        cipher = services.cipher
        keys = cipher.transient_keys
        assert keys is not None
        async with services.db.write() as conn:
            for update_id in (1, 2):
                payload = cipher.encrypt_json(
                    {"update_id": update_id}, binding=update_binding(update_id), transient=True
                )
                await conn.execute(
                    text(
                        "INSERT INTO inbox (update_id, payload, status, attempts, received_at,"
                        " next_attempt_at) VALUES (:u, :p, 'pending', 0, 0, 0)"
                    ),
                    {"u": update_id, "p": payload},
                )
            # A handled update: its payload is gone from the row but not from the WAL.
            await conn.execute(text("UPDATE inbox SET payload = NULL, status = 'done' WHERE update_id = 2"))
        before = keys.current
        done = await services.history.scrub()
        assert before in done.retired and keys.epochs() == [keys.current] and keys.current > before
        assert done.rewritten == 1 and done.checkpointed
        assert _wal_size(settings.data_dir / "jarchy.db") == 0
        async with services.db.read() as conn:
            stored = (await conn.execute(text("SELECT payload FROM inbox WHERE update_id = 1"))).scalar_one()
        assert Cipher.epoch_of(stored) == keys.current
        assert cipher.decrypt_json(stored, binding=update_binding(1)) == {"update_id": 1}
    finally:
        await services.close()


async def test_a_requested_scrub_runs_once_for_a_burst_and_on_close(tmp_path: Path, clock: Clock) -> None:
    settings = make_settings(tmp_path)
    services = await open_services(settings, clock, build_limiter(settings, clock))
    keys = services.cipher.transient_keys
    assert keys is not None
    scrubber = HistoryScrubber(services.db, services.cipher, delay_s=60)
    start = keys.current
    for _ in range(5):
        scrubber.request()
    await scrubber.close()  # a stop does not wait the minute, nor skip the scrub
    assert keys.current == start + 1
    await services.close()


def _wal_size(database: Path) -> int:
    wal = database.with_name(database.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_slots_sealed_under_another_key_are_never_overwritten(tmp_path: Path, key: DataKey) -> None:
    path = tmp_path / "transient.keys"
    theirs = TransientKeys(path, key)
    before = path.read_bytes()
    stranger = DataKey(bytes(32))
    assert not TransientKeys.opens(path, stranger) and TransientKeys.opens(path, key)
    mine = TransientKeys(path, stranger)  # a wrong key loaded by mistake starts an epoch of its own
    assert mine.epochs() and path.read_bytes()[: len(before) // SLOTS] == before[: len(before) // SLOTS]
    assert TransientKeys(path, key).epochs() == theirs.epochs()


async def test_a_draft_is_named_by_a_tag_that_each_scrub_renews(tmp_path: Path, clock: Clock) -> None:
    settings = make_settings(tmp_path)
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        screen = await services.reports.begin(4242)
        assert screen is not None
        pseudonym = services.pseudonyms.of_user(4242)

        async def tag() -> str:
            async with services.db.read() as conn:
                return str((await conn.execute(text("SELECT pseudonym FROM drafts"))).scalar_one())

        first = await tag()
        assert first != pseudonym
        await services.history.scrub()
        second = await tag()
        assert second not in (first, pseudonym)
        # Still the person's draft: found by them, and its payload opens.
        async with services.db.read() as conn:
            stored = await DraftRepository(OwnerTags(services.cipher)).get(
                conn, pseudonym, "report", clock.now()
            )
        assert stored is not None
        assert services.cipher.decrypt_json(
            stored.payload, binding=draft_binding(pseudonym, "report", stored.nonce)
        )
    finally:
        await services.close()


def test_a_second_process_cannot_turn_the_transient_keys_over(tmp_path: Path) -> None:
    held = lock_transient_keys(tmp_path)
    try:
        with pytest.raises(DataDirInUse):
            lock_transient_keys(tmp_path)
        # rotate-key takes the same lock: a bot with a configured instance name still blocks it.
        with pytest.raises(KeyFileError), _exclusive(tmp_path):
            pass
    finally:
        held.close()
    lock_transient_keys(tmp_path).close()  # free again once the first has stopped
