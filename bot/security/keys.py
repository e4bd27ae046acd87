"""The data key: one secret file, kept apart from the database, from which every subkey is derived."""

from __future__ import annotations

import base64
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.hash
import nacl.utils
from nacl.encoding import RawEncoder

log = logging.getLogger(__name__)

_PREFIX = "jarchy-key-v1:"
_KEY_BYTES = 32


class KeyFileError(Exception):
    """The key file is missing, malformed or readable by others."""


@dataclass(frozen=True, repr=False)
class DataKey:
    """A master key; subkeys are derived per purpose so one leak does not reveal the others."""

    master: bytes

    def derive(self, purpose: str) -> bytes:
        """Return a 32-byte subkey for one purpose (BLAKE2b keyed with the master key)."""
        digest: bytes = nacl.hash.blake2b(
            purpose.encode(), digest_size=32, key=self.master, person=b"jarchy-subkey-v1", encoder=RawEncoder
        )
        return digest

    def __repr__(self) -> str:
        return "DataKey(********)"


def create_key_file(path: Path, *, overwrite: bool = False) -> DataKey:
    """Write a new random key to `path`, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not overwrite:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite a key (data encrypted under it would be lost)"
        )
    master = nacl.utils.random(_KEY_BYTES)
    # O_EXCL: two first starts at once must not both write a key (one would lose its data).
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL) | getattr(os, "O_NOFOLLOW", 0)
    # Create with 0600 from the start so the key is never briefly world-readable.
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    try:
        os.write(fd, (_PREFIX + base64.b64encode(master).decode() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    return DataKey(master)


def read_key_file(path: Path) -> DataKey:
    """Read a key file, refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist; create one with `jarchy keygen`") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is readable by others; run `chmod 600 {path}`")
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not text.startswith(_PREFIX):
        raise KeyFileError(f"key file {path} is not a jarchy key (expected a line starting {_PREFIX})")
    try:
        master = base64.b64decode(text.removeprefix(_PREFIX), validate=True)
    except ValueError:
        raise KeyFileError(f"key file {path} is damaged") from None
    if len(master) != _KEY_BYTES:
        raise KeyFileError(f"key file {path} is damaged (wrong length)")
    return DataKey(master)


def load_or_create_key(path: Path, *, configured: bool) -> DataKey:
    """Load the key; on a first start with no key configured, create one beside the data."""
    if path.exists() or configured:
        return read_key_file(path)
    key = create_key_file(path)
    log.warning(
        "Created a new data key at %s. In production keep the key apart from the database "
        "(set JARCHY_KEY_FILE): a seized disk holding both reveals everything.",
        path,
    )
    return key
