"""Instances lend each other their transient keys through the database: each reads what the other sealed,
forgets what the other retired, refuses forged shares and announcements, and follows the other's scrubs.

Each test runs on SQLite and on PostgreSQL (the `backend` fixture): two instances, each with a data
directory and transient key file of its own, on one real database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.runtime.clock import FakeClock
from bot.runtime.key_exchange import FORGET_AFTER, STALE_AFTER, KeyExchange
from bot.security import Cipher, DataKey, DecryptionError
from bot.security.bindings import update_binding
from bot.security.peer_keys import PeerKeys
from bot.security.transient import RETIRED_GRACE_S, TransientKeys
from bot.services.upkeep.history import HistoryScrubber
from storage.database import Database
from storage.inbox import InboxRepository
from storage.schema import inbox, transient_peers, transient_shares
from storage.transient_peers import PeerKeyRepository


@dataclass
class Node:
    """One instance: its keys, cipher, exchange and scrubber."""

    name: str
    keys: TransientKeys
    cipher: Cipher
    exchange: KeyExchange
    history: HistoryScrubber
    follows: list[str]


def _node(name: str, tmp_path: Path, key: DataKey, db: Database, clock: FakeClock) -> Node:
    keys = TransientKeys(tmp_path / name / "transient.keys", key, monotonic=clock.monotonic)
    cipher = Cipher(key, keys)
    exchange = KeyExchange(db=db, cipher=cipher, instance=name, clock=clock)
    history = HistoryScrubber(db, cipher, peers=exchange, delay_s=0)
    node = Node(name, keys, cipher, exchange, history, [])
    exchange.on_scrub_elsewhere(lambda: node.follows.append("follow"))
    return node


async def _rounds(*nodes: Node, times: int = 2) -> None:
    # One round announces, the next lends to what the first announced, the last opens what was lent.
    for _ in range(times + 1):
        for node in nodes:
            await node.exchange.sync()


async def _store_update(db: Database, cipher: Cipher, update_id: int, clock: FakeClock) -> bytes:
    async with db.write() as conn:
        sealed = cipher.encrypt(
            b'{"update_id": %d}' % update_id, binding=update_binding(update_id), transient=True
        )
        await InboxRepository().store(conn, [(update_id, sealed)], update_id + 1, clock.now())
    return sealed


async def _stored(db: Database, update_id: int) -> bytes:
    async with db.read() as conn:
        payload: bytes = (
            await conn.execute(select(inbox.c.payload).where(inbox.c.update_id == update_id))
        ).scalar_one()
    return payload


async def test_an_instance_reads_what_another_sealed_once_keys_are_exchanged(
    backend: str, db: Database, tmp_path: Path, key: DataKey, clock: FakeClock
) -> None:
    a, b = _node("a", tmp_path, key, db, clock), _node("b", tmp_path, key, db, clock)
    sealed = a.cipher.encrypt(b"raw update", binding="inbox.payload:1", transient=True)
    assert not b.cipher.can_open_epoch(sealed)  # not damaged: its key has not arrived yet
    with pytest.raises(DecryptionError):
        b.cipher.decrypt(sealed, binding="inbox.payload:1")
    await _rounds(a, b)
    assert b.cipher.can_open_epoch(sealed)
    assert b.cipher.decrypt(sealed, binding="inbox.payload:1") == b"raw update"
    back = b.cipher.encrypt(b"a draft", binding="drafts.payload:x", transient=True)
    assert a.cipher.decrypt(back, binding="drafts.payload:x") == b"a draft"
    # Lent keys open only their own rows: the binding still holds.
    with pytest.raises(DecryptionError):
        b.cipher.decrypt(sealed, binding="inbox.payload:2")
    # Nothing in the database is a key: the shares are sealed boxes, the announcements sealed too.
    async with db.read() as conn:
        shares = (await conn.execute(select(transient_shares.c.sealed))).scalars().all()
        announced = (await conn.execute(select(transient_peers.c.public_key))).scalars().all()
    lent = [*a.keys.own_keys().values(), *b.keys.own_keys().values()]
    assert shares and announced
    assert not any(k in blob for k in lent for blob in [*shares, *announced])


async def test_a_key_its_owner_retires_is_forgotten_by_the_peer_after_the_grace(
    backend: str, db: Database, tmp_path: Path, key: DataKey, clock: FakeClock
) -> None:
    a, b = _node("a", tmp_path, key, db, clock), _node("b", tmp_path, key, db, clock)
    old = a.cipher.encrypt(b"old", binding="x", transient=True)
    await _rounds(a, b)
    first = a.keys.current
    async with db.write() as conn:
        newer = a.keys.begin_epoch(await a.exchange.epoch_floor(conn))
    assert newer > max(b.keys.epochs())  # epoch numbers stay unique across instances
    a.keys.retire_all_but(newer)
    fresh = a.cipher.encrypt(b"fresh", binding="x", transient=True)
    await _rounds(a, b)
    assert first not in b.keys.peer_keys()["a"]
    assert b.cipher.decrypt(old, binding="x") == b"old"  # a value read just before still opens, a while
    assert b.cipher.decrypt(fresh, binding="x") == b"fresh"
    clock.advance(RETIRED_GRACE_S + 1)
    with pytest.raises(DecryptionError):
        b.cipher.decrypt(old, binding="x")
    async with db.read() as conn:
        epochs = (await conn.execute(select(transient_shares.c.epoch))).scalars().all()
    assert first not in epochs  # no share of the retired key is left to carve


async def test_a_tampered_share_is_refused_and_lent_again(
    backend: str, db: Database, tmp_path: Path, key: DataKey, clock: FakeClock
) -> None:
    a, b = _node("a", tmp_path, key, db, clock), _node("b", tmp_path, key, db, clock)
    await _rounds(a, b, times=1)
    async with db.write() as conn:
        await conn.execute(
            update(transient_shares).where(transient_shares.c.holder == "b").values(sealed=b"\x00" * 120)
        )
    dropped = await b.exchange.sync()
    assert dropped.dropped >= 1 and "a" not in b.keys.peer_keys()
    await a.exchange.sync()  # lends again what was dropped
    await b.exchange.sync()
    assert a.keys.current in b.keys.peer_keys()["a"]


async def test_an_announcement_not_sealed_under_the_data_key_is_lent_nothing(
    backend: str, db: Database, tmp_path: Path, key: DataKey, clock: FakeClock
) -> None:
    a = _node("a", tmp_path, key, db, clock)
    stranger_key = DataKey.generate()
    stranger = Cipher(stranger_key, TransientKeys(tmp_path / "evil" / "t.keys", stranger_key))
    forged = PeerKeys(stranger, "evil").announce(7, b"\x01" * 32)
    async with db.write() as conn:
        await PeerKeyRepository().announce(conn, "evil", {7: forged}, clock.now())
    done = await a.exchange.sync()
    assert done.given == 0
    async with db.read() as conn:
        holders = (await conn.execute(select(transient_shares.c.holder))).scalars().all()
    assert "evil" not in holders


async def test_a_requested_scrub_is_followed_by_the_other_instance(
    backend: str, db: Database, tmp_path: Path, key: DataKey, clock: FakeClock
) -> None:
    a, b = _node("a", tmp_path, key, db, clock), _node("b", tmp_path, key, db, clock)
    await _rounds(a, b)
    sealed = await _store_update(db, b.cipher, 41, clock)
    done = await a.history.scrub()
    assert done.rewritten == 1  # a can read b's row, and moves it under its new key
    rewritten = await _stored(db, 41)
    assert rewritten != sealed and Cipher.epoch_of(rewritten) == a.keys.current
    # The new key was lent in the scrub's own transaction: b reads the row after one sync.
    await b.exchange.sync()
    assert b.cipher.decrypt(rewritten, binding=update_binding(41)) == b'{"update_id": 41}'
    assert b.follows == ["follow"] and a.follows == []
    followed = await b.history.scrub(requested=False)
    assert followed.retired  # b's own old keys are overwritten too
    await a.exchange.sync()
    assert a.follows == []  # a follower's scrub is not followed back


async def test_a_dead_peers_rows_move_under_the_survivors_keys_before_its_keys_are_forgotten(
    backend: str, db: Database, tmp_path: Path, key: DataKey, clock: FakeClock
) -> None:
    a, b = _node("a", tmp_path, key, db, clock), _node("b", tmp_path, key, db, clock)
    await _rounds(a, b)
    await _store_update(db, a.cipher, 7, clock)
    clock.advance(STALE_AFTER.total_seconds() + 1)  # a is killed: it announces nothing more
    await b.exchange.sync()
    assert b.follows == ["follow"]
    await b.history.scrub(requested=False)
    assert Cipher.epoch_of(await _stored(db, 7)) == b.keys.current
    clock.advance(FORGET_AFTER.total_seconds())
    done = await b.exchange.sync()
    assert done.forgotten == ["a"] and b.follows == ["follow"]
    clock.advance(RETIRED_GRACE_S + 1)
    assert "a" not in b.keys.peer_keys()
    assert b.cipher.decrypt(await _stored(db, 7), binding=update_binding(7)) == b'{"update_id": 7}'
    async with db.read() as conn:
        holders = (await conn.execute(select(transient_shares.c.holder))).scalars().all()
        instances = (await conn.execute(select(transient_peers.c.instance))).scalars().all()
    assert "a" not in holders and set(instances) == {"b"}
