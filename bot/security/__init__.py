"""Encryption at rest and pseudonyms: every feature stores personal data through these."""

from bot.security.crypto import Cipher, DecryptionError
from bot.security.keys import DataKey, KeyFileError, create_key_file, load_or_create_key
from bot.security.pseudonyms import Pseudonymizer

__all__ = [
    "Cipher",
    "DataKey",
    "DecryptionError",
    "KeyFileError",
    "Pseudonymizer",
    "create_key_file",
    "load_or_create_key",
]
