"""Authenticated encryption of fields, bound to the row they belong to."""

from __future__ import annotations

import json
import struct
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from bot.domain.errors import Damaged
from bot.security.keys import DataKey
from bot.security.transient import TransientKeys

_VERSION = b"\x01"
_TRANSIENT = b"\x02"  # followed by the epoch (4 bytes): sealed under a short-lived key
_NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


class DecryptionError(Damaged):
    """A ciphertext was tampered with, moved to another row, or made under another key."""


class Cipher:
    """XChaCha20-Poly1305 with the row's identity as associated data.

    Binding to the row means a ciphertext copied into another row (or another column) fails to decrypt,
    so a database attacker cannot swap one person's data for another's.
    """

    def __init__(self, key: DataKey, transient: TransientKeys | None = None) -> None:
        self._key = key.derive("field-encryption")
        self._transient = transient

    @property
    def transient_keys(self) -> TransientKeys | None:
        """The epoch keys short-lived rows are sealed under (None: they use the data key)."""
        return self._transient

    def encrypt(self, plaintext: bytes, *, binding: str, transient: bool = False) -> bytes:
        """Encrypt bytes for the row and column named by `binding` (e.g. "outbox.payload:<uid>").

        `transient` seals under the current epoch key (bot.security.transient): for rows that link a person
        to an action and live only minutes or hours. Call it inside a write transaction, so a scrub (which
        holds the write lock while it changes epochs) never retires a key a row is about to be stored under.
        """
        nonce = nacl.utils.random(_NONCE_BYTES)
        if transient and self._transient is not None:
            epoch = self._transient.current
            head = _TRANSIENT + struct.pack(">I", epoch)
            key = self._transient.key_of(epoch)
            if key is None:
                raise RuntimeError("the current transient epoch has no key")
        else:
            head, key = _VERSION, self._key
        sealed: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, head[:1] + binding.encode(), nonce, key
        )
        return head + nonce + sealed

    def decrypt(self, ciphertext: bytes, *, binding: str) -> bytes:
        """Decrypt bytes sealed by `encrypt` for the same binding."""
        head_len, keys = self._keys_for(ciphertext)
        if len(ciphertext) < head_len + _NONCE_BYTES:
            raise DecryptionError("unknown ciphertext format")
        nonce = ciphertext[head_len : head_len + _NONCE_BYTES]
        for key in keys:
            try:
                plain: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    ciphertext[head_len + _NONCE_BYTES :], ciphertext[:1] + binding.encode(), nonce, key
                )
            except nacl.exceptions.CryptoError:
                continue
            return plain
        raise DecryptionError("ciphertext does not authenticate for this row")

    def can_open_epoch(self, ciphertext: bytes) -> bool:
        """Tell whether some key this process holds (its own or a peer's) may open a transient value.

        False means the value may be fine but sealed by another instance whose key has not arrived yet:
        its reader should wait for the key exchange rather than treat the row as damaged.
        """
        epoch = self.epoch_of(ciphertext)
        if epoch is None:
            return ciphertext[:1] == _VERSION
        return self._transient is not None and bool(self._transient.keys_of(epoch))

    @staticmethod
    def epoch_of(ciphertext: bytes) -> int | None:
        """Return the transient epoch a ciphertext is sealed under, or None for the data key."""
        if ciphertext[:1] == _TRANSIENT and len(ciphertext) >= 5:
            epoch: int = struct.unpack(">I", ciphertext[1:5])[0]
            return epoch
        return None

    def _keys_for(self, ciphertext: bytes) -> tuple[int, list[bytes]]:
        if ciphertext[:1] == _VERSION:
            return 1, [self._key]
        epoch = self.epoch_of(ciphertext)
        if epoch is not None:
            keys = self._transient.keys_of(epoch) if self._transient is not None else []
            if not keys:
                raise DecryptionError("sealed under a transient key that has been retired")
            return 5, keys
        raise DecryptionError("unknown ciphertext format")

    def encrypt_text(self, text: str, *, binding: str, transient: bool = False) -> bytes:
        """Encrypt a string."""
        return self.encrypt(text.encode(), binding=binding, transient=transient)

    def decrypt_text(self, ciphertext: bytes, *, binding: str) -> str:
        """Decrypt a string."""
        return self.decrypt(ciphertext, binding=binding).decode()

    def encrypt_json(self, value: Any, *, binding: str, transient: bool = False) -> bytes:
        """Encrypt a JSON-serialisable value."""
        return self.encrypt(
            json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(),
            binding=binding,
            transient=transient,
        )

    def decrypt_json(self, ciphertext: bytes, *, binding: str) -> Any:
        """Decrypt a JSON value."""
        return json.loads(self.decrypt(ciphertext, binding=binding))
