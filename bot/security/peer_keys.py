"""Lending transient keys to the other instances on one database, without ever storing them readable.

Each instance's epoch key (bot.security.transient) also yields an X25519 key pair. The public half is
published in the database, sealed under the data key so nobody without that key can slip in a public key of
their own; a peer seals its live epoch keys to it. A lent key is therefore wrapped twice: in a sealed box
that only the holder's epoch key opens, around a value sealed under the data key and bound to who lent which
epoch to whom. Once the holder's epoch is retired (its slot overwritten), every copy of every share addressed
to it, in the WAL or in pg_wal, is noise even to someone who holds the data key.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.hash
from nacl.encoding import RawEncoder
from nacl.public import PrivateKey, PublicKey, SealedBox

from bot.security.crypto import Cipher, DecryptionError

_PERSON = b"jarchy-peer-box"


def _box_secret(epoch_key: bytes) -> PrivateKey:
    seed: bytes = nacl.hash.blake2b(b"", key=epoch_key, digest_size=32, person=_PERSON, encoder=RawEncoder)
    return PrivateKey.from_seed(seed)


def _announce_binding(instance: str, epoch: int) -> str:
    return f"transient.peer:{instance}:{epoch}"


def _share_binding(owner: str, epoch: int, holder: str, holder_epoch: int) -> str:
    return f"transient.share:{owner}:{epoch}:{holder}:{holder_epoch}"


class PeerKeys:
    """Announcements of this instance's epochs, and the shares of its keys it gives and receives."""

    def __init__(self, cipher: Cipher, instance: str) -> None:
        self._cipher = cipher
        self._instance = instance

    def announce(self, epoch: int, epoch_key: bytes) -> bytes:
        """The sealed public key peers lend their keys to for as long as `epoch` is ours."""
        public = bytes(_box_secret(epoch_key).public_key)
        return self._cipher.encrypt(public, binding=_announce_binding(self._instance, epoch))

    def public_key(self, instance: str, epoch: int, announced: bytes) -> bytes | None:
        """Return a peer's announced public key, or None if the announcement does not authenticate."""
        try:
            public = self._cipher.decrypt(announced, binding=_announce_binding(instance, epoch))
        except DecryptionError:
            return None
        return public if len(public) == PublicKey.SIZE else None

    def share(self, epoch: int, epoch_key: bytes, *, holder: str, holder_epoch: int, public: bytes) -> bytes:
        """Seal one of this instance's epoch keys to a peer's epoch."""
        inner = self._cipher.encrypt(
            epoch_key, binding=_share_binding(self._instance, epoch, holder, holder_epoch)
        )
        sealed: bytes = SealedBox(PublicKey(public)).encrypt(inner)
        return sealed

    def open(
        self, sealed: bytes, *, owner: str, epoch: int, holder_epoch: int, holder_key: bytes
    ) -> bytes | None:
        """Open a share addressed to this instance's `holder_epoch`; None if it does not authenticate."""
        try:
            inner = SealedBox(_box_secret(holder_key)).decrypt(sealed)
            key = self._cipher.decrypt(
                inner, binding=_share_binding(owner, epoch, self._instance, holder_epoch)
            )
        except (nacl.exceptions.CryptoError, DecryptionError):
            return None
        return key if len(key) == 32 else None
