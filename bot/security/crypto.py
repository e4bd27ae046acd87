"""Authenticated encryption of fields, bound to the row they belong to."""

from __future__ import annotations

import json
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from bot.security.keys import DataKey

_VERSION = b"\x01"
_NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


class DecryptionError(Exception):
    """A ciphertext was tampered with, moved to another row, or made under another key."""


class Cipher:
    """XChaCha20-Poly1305 with the row's identity as associated data.

    Binding to the row means a ciphertext copied into another row (or another column) fails to decrypt,
    so a database attacker cannot swap one person's data for another's.
    """

    def __init__(self, key: DataKey) -> None:
        self._key = key.derive("field-encryption")

    def encrypt(self, plaintext: bytes, *, binding: str) -> bytes:
        """Encrypt bytes for the row and column named by `binding` (e.g. "outbox.payload:<uid>")."""
        nonce = nacl.utils.random(_NONCE_BYTES)
        sealed: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, _VERSION + binding.encode(), nonce, self._key
        )
        return _VERSION + nonce + sealed

    def decrypt(self, ciphertext: bytes, *, binding: str) -> bytes:
        """Decrypt bytes sealed by `encrypt` for the same binding."""
        if len(ciphertext) < 1 + _NONCE_BYTES or ciphertext[:1] != _VERSION:
            raise DecryptionError("unknown ciphertext format")
        nonce = ciphertext[1 : 1 + _NONCE_BYTES]
        try:
            plain: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ciphertext[1 + _NONCE_BYTES :], _VERSION + binding.encode(), nonce, self._key
            )
        except nacl.exceptions.CryptoError:
            raise DecryptionError("ciphertext does not authenticate for this row") from None
        return plain

    def encrypt_text(self, text: str, *, binding: str) -> bytes:
        """Encrypt a string."""
        return self.encrypt(text.encode(), binding=binding)

    def decrypt_text(self, ciphertext: bytes, *, binding: str) -> str:
        """Decrypt a string."""
        return self.decrypt(ciphertext, binding=binding).decode()

    def encrypt_json(self, value: Any, *, binding: str) -> bytes:
        """Encrypt a JSON-serialisable value."""
        return self.encrypt(
            json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), binding=binding
        )

    def decrypt_json(self, ciphertext: bytes, *, binding: str) -> Any:
        """Decrypt a JSON value."""
        return json.loads(self.decrypt(ciphertext, binding=binding))
