"""Short-lived keys for data that links a person to what they do: raw updates, drafts, phone clean-ups.

SQLite's WAL, and the free blocks a deleted WAL leaves on the disk, keep old versions of rows long after
they were deleted. Encrypting such rows under the data key would let anyone who later holds the key
decrypt those carved copies. So they are encrypted under an epoch key instead, kept in a small file of
fixed size whose slots are overwritten in place when the epoch is retired: once a key's slot is
overwritten, every old copy of every row sealed under it is noise, wherever it lingers.

In-place overwriting holds on ext4 and similar file systems; on flash the controller may keep the old
block until it is erased, which is one more reason full-disk encryption is required (see the README).

Several instances on one database each keep epochs of their own and lend their live keys to the others
through the database (bot.security.peer_keys, bot.runtime.key_exchange): a peer's keys are held in memory
only, so an instance can read what another one sealed, and forgets those keys once their owner retires them.
"""

from __future__ import annotations

import os
import secrets
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from bot.security.keys import DataKey

SLOTS = 4
# Longer than an outbox lease (60 s) and any handler: what was read before a scrub is used well within it.
RETIRED_GRACE_S = 300.0
# Tags (bot.security.owner_tags) need an own retired key for far less: a tag is written only inside a write
# transaction and a scrub re-tags every row under the write lock before it retires a key, so only a read
# whose snapshot predates the scrub's commit can meet a retired key's tag. Under load a scrub runs every
# second or so; counting all 300 s of retired keys made every owner lookup hash, and bind, hundreds of tags.
TAG_GRACE_S = 30.0
_KEY_BYTES = 32
_NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_SEALED_BYTES = _KEY_BYTES + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
_SLOT_BYTES = 4 + _NONCE_BYTES + _SEALED_BYTES
_AD = b"jarchy-transient-slot-v1:"
# A new file's first epoch is drawn at random, so two instances started afresh do not number their keys
# alike (later epochs follow the highest number in the cluster); the room above it is for those.
_FIRST_EPOCH_BELOW = 2**30


class NoFreeSlot(Exception):
    """Every slot holds a key that rows may still be sealed under."""


class TransientKeys:
    """Epoch keys in a fixed-size file; the newest encrypts, the others only decrypt until retired."""

    def __init__(self, path: Path, key: DataKey, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._wrap = key.derive("transient.wrap")
        self._keys: dict[int, bytes] = {}
        self._slots: dict[int, int] = {}  # epoch -> slot index
        self._retired: dict[int, tuple[bytes, float]] = {}  # epoch -> (key, forgotten at)
        self._monotonic = monotonic
        self._foreign: set[int] = set()  # slots that hold something this key cannot open
        self._peers: dict[str, dict[int, bytes]] = {}  # instance -> epoch -> key, lent by other instances
        self._peers_retired: list[tuple[int, bytes, float]] = []  # (epoch, key, forgotten at)
        self._load()
        if not self._keys:
            self.begin_epoch(at_least=secrets.randbelow(_FIRST_EPOCH_BELOW) + 1)

    @property
    def current(self) -> int:
        """The epoch new data is sealed under."""
        return max(self._keys)

    def key_of(self, epoch: int) -> bytes | None:
        """Return an epoch's key, or None once it is retired (and its grace in memory is over)."""
        key = self._keys.get(epoch)
        if key is not None:
            return key
        retired = self._retired.get(epoch)
        if retired is not None and retired[1] > self._monotonic():
            return retired[0]
        return None

    def keys_of(self, epoch: int) -> list[bytes]:
        """Every key a row sealed under `epoch` may need: this instance's first, then those its peers lent.

        Epoch numbers are unique across instances in the normal course, but a collision (two fresh files,
        a restore) costs only a failed trial: the ciphers authenticate, so a wrong key never opens a row.
        """
        now = self._monotonic()
        own = self.key_of(epoch)
        lent = [keys[epoch] for keys in self._peers.values() if epoch in keys]
        lent += [key for e, key, until in self._peers_retired if e == epoch and until > now]
        return ([own] if own is not None else []) + lent

    def tag_keys(self) -> list[bytes]:
        """Every key a row's owner may be tagged under: the current one first, then older kept ones, those
        retired within TAG_GRACE_S, the keys peers lend and, for the whole grace, those they stopped lending.

        Only this instance's own retirements are tied to a re-tagging under its write lock. A peer's key
        leaves its lent set here also when the peer's shares could not be opened (sealed to an epoch of ours
        just retired) while the peer still writes under it, until its next sync.
        """
        now = self._monotonic()
        recent = now + RETIRED_GRACE_S - TAG_GRACE_S  # a key forgotten after this was retired recently
        kept = [self._keys[e] for e in sorted(self._keys, reverse=True)]
        kept += [key for key, until in self._retired.values() if until > recent]
        kept += [key for keys in self._peers.values() for key in keys.values()]
        return kept + [key for _, key, until in self._peers_retired if until > now]

    def own_keys(self) -> dict[int, bytes]:
        """This instance's kept epochs and their keys (what it lends its peers)."""
        return dict(self._keys)

    def peer_keys(self) -> dict[str, dict[int, bytes]]:
        """The keys other instances lent, by instance and epoch."""
        return {instance: dict(keys) for instance, keys in self._peers.items()}

    def set_peer_keys(self, instance: str, keys: Mapping[int, bytes]) -> None:
        """Hold exactly `keys` for `instance`; keys it no longer lends are kept for the grace period only.

        The grace is the same as for this instance's own retired keys, for the same reason: a value read
        just before the peer's scrub rewrote it may still be on its way through a handler here.
        """
        now = self._monotonic()
        self._peers_retired = [kept for kept in self._peers_retired if kept[2] > now]
        for epoch, key in self._peers.get(instance, {}).items():
            if keys.get(epoch) != key:
                self._peers_retired.append((epoch, key, now + RETIRED_GRACE_S))
        if keys:
            self._peers[instance] = dict(keys)
        else:
            self._peers.pop(instance, None)

    def epochs(self) -> list[int]:
        """Every epoch whose key is still kept, oldest first."""
        return sorted(self._keys)

    def begin_epoch(self, at_least: int = 0) -> int:
        """Make a new key, write it durably to a free slot and make it the current one.

        `at_least`: the lowest number the epoch may take (one above every epoch in the cluster).
        """
        epoch = max(max(self._keys, default=0) + 1, at_least)
        if epoch >= 2**32:
            raise ValueError("transient epoch numbers are exhausted")
        # A slot sealed under another data key (a wrong key, a half-done rotation) is never overwritten:
        # the rows it seals would be lost with it.
        used = set(self._slots.values()) | self._foreign
        free = [slot for slot in range(SLOTS) if slot not in used]
        if not free:
            # Overwriting a live key would make its rows unreadable: the caller rewrites them under the
            # current epoch and retires the others first.
            raise NoFreeSlot(f"all {SLOTS} transient key slots hold live keys")
        key = nacl.utils.random(_KEY_BYTES)
        self._write_slot(free[0], _seal(self._wrap, epoch, key))
        self._keys[epoch], self._slots[epoch] = key, free[0]
        return epoch

    def retire_all_but(self, keep: int) -> list[int]:
        """Overwrite the slots of every epoch except `keep`; return the retired epochs.

        The disk forgets them at once; this process keeps them in memory for RETIRED_GRACE_S, because a
        reader may hold a value it read just before the scrub rewrote it (a claimed outbox row about to be
        sent, an update being dispatched). Memory is not what a seized disk holds.
        """
        retired = [epoch for epoch in self._keys if epoch != keep]
        now = self._monotonic()
        self._retired = {e: kept for e, kept in self._retired.items() if kept[1] > now}
        for epoch in retired:
            self._write_slot(self._slots[epoch], bytes(_SLOT_BYTES))
            self._retired[epoch] = (self._keys[epoch], now + RETIRED_GRACE_S)
            self._forget(epoch)
        return retired

    def rewrap(self, key: DataKey) -> None:
        """Seal the kept epoch keys under another data key (key rotation), slot by slot in place."""
        wrap = key.derive("transient.wrap")
        for epoch, slot in self._slots.items():
            self._write_slot(slot, _seal(wrap, epoch, self._keys[epoch]))
        self._wrap = wrap

    @staticmethod
    def opens(path: Path, key: DataKey) -> bool:
        """Tell whether `key` opens any slot of the file at `path` (a missing or empty file: True)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return True
        wrap = key.derive("transient.wrap")
        chunks = [raw[i * _SLOT_BYTES : (i + 1) * _SLOT_BYTES] for i in range(len(raw) // _SLOT_BYTES)]
        live = [chunk for chunk in chunks if any(chunk)]
        return not live or any(_open(wrap, chunk) is not None for chunk in live)

    def _forget(self, epoch: int) -> None:
        del self._keys[epoch]
        del self._slots[epoch]

    def _load(self) -> None:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return
        for slot in range(min(SLOTS, len(raw) // _SLOT_BYTES)):
            chunk = raw[slot * _SLOT_BYTES : (slot + 1) * _SLOT_BYTES]
            opened = _open(self._wrap, chunk)
            if opened is not None:
                epoch, key = opened
                self._keys[epoch], self._slots[epoch] = key, slot
            elif any(chunk):
                self._foreign.add(slot)
        # Slots sealed under another data key stay untouched: they are not ours to erase.

    def _write_slot(self, slot: int, data: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            size = os.fstat(fd).st_size
            if size < SLOTS * _SLOT_BYTES:
                # Allocate the whole file once, so later writes overwrite blocks instead of adding them.
                os.pwrite(fd, bytes(SLOTS * _SLOT_BYTES - size), size)
            os.pwrite(fd, data, slot * _SLOT_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)


def _seal(wrap: bytes, epoch: int, key: bytes) -> bytes:
    header = struct.pack(">I", epoch)
    nonce = nacl.utils.random(_NONCE_BYTES)
    sealed: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(key, _AD + header, nonce, wrap)
    return header + nonce + sealed


def _open(wrap: bytes, chunk: bytes) -> tuple[int, bytes] | None:
    if len(chunk) != _SLOT_BYTES or not any(chunk):
        return None
    header, nonce, sealed = chunk[:4], chunk[4 : 4 + _NONCE_BYTES], chunk[4 + _NONCE_BYTES :]
    try:
        key: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, _AD + header, nonce, wrap)
    except nacl.exceptions.CryptoError:
        return None
    return struct.unpack(">I", header)[0], key
