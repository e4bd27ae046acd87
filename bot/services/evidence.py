"""Evidence files: hashed, encrypted and kept in the data directory, so they outlive deletion on Telegram."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.security import Cipher

MAX_FILE_BYTES = 20 * 1024 * 1024  # the Bot API's getFile limit


@dataclass(frozen=True)
class SavedFile:
    """Where a file went and what it was."""

    uid: str
    sha256: str
    size: int


class EvidenceStore:
    """One encrypted file per piece of evidence, named by a random uid the ciphertext is bound to."""

    def __init__(self, directory: Path, cipher: Cipher) -> None:
        self._directory = directory
        self._cipher = cipher

    async def save(self, content: bytes) -> SavedFile:
        """Hash, encrypt and write a file durably; return its uid and SHA-256."""
        uid = secrets.token_hex(16)
        digest = hashlib.sha256(content).hexdigest()
        sealed = self._cipher.encrypt(content, binding=_binding(uid))
        await asyncio.to_thread(self._write, uid, sealed)
        return SavedFile(uid=uid, sha256=digest, size=len(content))

    async def read(self, uid: str) -> bytes:
        """Return a file's original bytes."""
        sealed = await asyncio.to_thread((self._directory / f"{uid}.bin").read_bytes)
        return self._cipher.decrypt(sealed, binding=_binding(uid))

    async def delete(self, uids: Iterable[str]) -> None:
        """Remove files (missing ones are fine)."""
        for uid in uids:
            await asyncio.to_thread((self._directory / f"{uid}.bin").unlink, True)

    def _write(self, uid: str, sealed: bytes) -> None:
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = self._directory / f"{uid}.bin"
        temporary = final.with_suffix(".tmp")
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(sealed)
            handle.flush()
            os.fsync(handle.fileno())
        # The row that names this file is committed after it; a rename makes the file whole or absent.
        os.replace(temporary, final)


def _binding(uid: str) -> str:
    return f"evidence.file:{uid}"
