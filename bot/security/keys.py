"""The data key: secrets kept apart from the database, from which every subkey is derived.

A key holds two kinds of secret. The *rotating* secret (`master`) derives the subkeys that encrypt data
(ROTATING purposes): `jarchy rotate-key` replaces it and re-encrypts everything under the new one. The
*identity* secret derives the subkeys whose outputs are stored or shown and cannot be recomputed, because
their inputs are not kept: pseudonyms (HMAC of Telegram ids), the audit chain's HMAC, reporters' K- codes.
Rotation carries the identity secret over unchanged, so people keep their roles and the chain verifies.

Every purpose not listed in ROTATING derives from the identity secret: a new purpose keeps working across a
rotation, and tests/bot/security/test_keys.py fails until it is listed in ROTATING or LONG_LIVED on purpose.

Files: `jarchy-key-v1:<base64>` (one master for everything, still read), `jarchy-key-v2:<json>` (written
now), and `jarchy-key-wrapped-v1:<json>`, either of them sealed under a passphrase (Argon2id + secretbox).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import json
import logging
import os
import secrets
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.hash
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils
from nacl.encoding import RawEncoder

log = logging.getLogger(__name__)

_V1 = "jarchy-key-v1:"
_V2 = "jarchy-key-v2:"
WRAPPED = "jarchy-key-wrapped-v1:"
_KEY_BYTES = 32
# Subkeys renewed by rotation: whatever they protect, rotate-key re-encrypts or re-wraps. The webhook's
# secret protects nothing stored: the next start gives Telegram the new one, and an old key opens nothing.
ROTATING = frozenset(
    {"field-encryption", "evidence.file-stream", "transient.wrap", "key-check", "webhook.secret"}
)
# Subkeys kept across rotations: their outputs are stored (pseudonyms, audit hashes, evidence MACs) or shown
# (K- codes), and the inputs to recompute them are not all kept.
LONG_LIVED = frozenset({"pseudonym", "audit.chain", "reporter-code", "evidence.bind", "key-check.identity"})
# The long-lived purposes a v1 key derived straight from its master: their values must not change. Frozen:
# long-lived purposes added later come from the identity secret, with a v1 key as with any other.
_V1_PINNED = ("pseudonym", "audit.chain", "reporter-code", "evidence.bind")
_CHECK_LABEL = b"jarchy: does this key open this database?"
# Argon2id at libsodium's "moderate" level: about 0.7 s and 256 MiB once per start, not per request.
ARGON2_OPS = argon2id.OPSLIMIT_MODERATE
ARGON2_MEM = argon2id.MEMLIMIT_MODERATE


class KeyFileError(Exception):
    """The key is missing, malformed, readable by others, or not the one this database was written with."""


def _blake(purpose: str, key: bytes) -> bytes:
    digest: bytes = nacl.hash.blake2b(
        purpose.encode(), digest_size=32, key=key, person=b"jarchy-subkey-v1", encoder=RawEncoder
    )
    return digest


@dataclass(frozen=True, repr=False)
class DataKey:
    """The rotating secret (`master`), the identity secret, and identity subkeys pinned by a v1 key."""

    master: bytes
    identity: bytes = b""  # empty: a v1 key, one master for everything
    pinned: tuple[tuple[str, bytes], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.identity:
            # A v1 key: its long-lived subkeys came straight from the master and keep their values; purposes
            # added since come from a one-way identity secret, so a rotated key never holds the old master.
            object.__setattr__(self, "identity", _blake("identity-root", self.master))
            object.__setattr__(self, "pinned", tuple((p, _blake(p, self.master)) for p in _V1_PINNED))

    @classmethod
    def generate(cls) -> DataKey:
        """Return a new key with independent random secrets."""
        return cls(nacl.utils.random(_KEY_BYTES), nacl.utils.random(_KEY_BYTES))

    def rotated(self) -> DataKey:
        """Return a key with a new rotating secret and this key's identity secrets."""
        return DataKey(nacl.utils.random(_KEY_BYTES), self.identity, self.pinned)

    def derive(self, purpose: str) -> bytes:
        """Return a 32-byte subkey for one purpose (BLAKE2b keyed with the secret of its kind)."""
        if purpose in ROTATING:
            return _blake(purpose, self.master)
        for name, subkey in self.pinned:
            if name == purpose:
                return subkey
        return _blake(purpose, self.identity)

    def to_text(self) -> str:
        """Return the v2 key-file line."""
        body = {
            "rotating": _b64(self.master),
            "identity": _b64(self.identity),
            "pinned": {name: _b64(subkey) for name, subkey in self.pinned},
        }
        return _V2 + json.dumps(body, separators=(",", ":"), sort_keys=True)

    def __repr__(self) -> str:
        return "DataKey(********)"


def key_check(key: DataKey) -> str:
    """Return the value kept in the database that tells whether a key is the one it was written with.

    Two MACs of a fixed label under subkeys derived for this alone (one rotating, one long-lived): it says
    nothing about the key, and a rotation changes the first part only.
    """
    parts = [
        nacl.hash.blake2b(_CHECK_LABEL, digest_size=16, key=key.derive(purpose), encoder=RawEncoder).hex()
        for purpose in ("key-check", "key-check.identity")
    ]
    return "kc1:" + ":".join(parts)


def same_identity(check: str, other: str) -> bool:
    """Tell whether two key checks come from keys with the same identity secret (a key and its rotation)."""
    return check.rsplit(":", 1)[-1] == other.rsplit(":", 1)[-1]


class Passphrase:
    """Where a wrapped key's passphrase comes from: a file if configured, else the terminal; asked once."""

    def __init__(
        self, file: Path | None = None, *, managed: bool = False, ask: Callable[[str], str] | None = None
    ) -> None:
        self._file = file
        self._managed = managed  # the file is a credential or docker secret (see open_key_file)
        self._ask = ask
        self._value: bytes | None = None

    def get(self, path: Path, *, confirm: bool = False) -> bytes:
        """Return the passphrase, reading or asking for it the first time."""
        if self._value is None:
            self._value = self._read(path, confirm)
        return self._value

    def _read(self, path: Path, confirm: bool) -> bytes:
        if self._file is not None:
            try:
                _check_private(self._file, "passphrase file", managed=self._managed)
                text = self._file.read_text(encoding="utf-8")
            except OSError as error:
                raise KeyFileError(
                    f"cannot read the passphrase file {self._file} (JARCHY_KEY_PASSPHRASE_FILE): "
                    f"{error.strerror}"
                ) from None
            value = text.removesuffix("\n").removesuffix("\r")
        else:
            ask = self._ask or _terminal_prompt()
            if ask is None:
                raise KeyFileError(
                    f"key file {path} is protected by a passphrase: type it at a terminal, "
                    "or set JARCHY_KEY_PASSPHRASE_FILE to a file that holds it"
                )
            value = ask(f"Passphrase for the data key {path}: ")
            if confirm and ask("The same passphrase again: ") != value:
                raise KeyFileError("the two passphrases differ; nothing was written")
        if not value:
            raise KeyFileError("the passphrase is empty")
        return value.encode()


def _terminal_prompt() -> Callable[[str], str] | None:
    # getpass reads from the controlling terminal; without one (a service, a pipe) there is nobody to ask.
    try:
        interactive = sys.stdin.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return getpass.getpass if interactive else None


@dataclass(frozen=True)
class OpenedKey:
    """A key read from a file, and whether the file was sealed under a passphrase."""

    key: DataKey
    wrapped: bool


def open_key_file(path: Path, passphrase: Passphrase | None = None, *, managed: bool = False) -> OpenedKey:
    """Read a key file (unwrapping it if it is sealed), refusing one that group or others can read.

    `managed` files come from a service manager (a systemd credential, a docker secret) whose directory
    only this service sees: their mode is the manager's business, so only a writable one is refused.
    """
    try:
        _check_private(path, "key file", managed=managed)
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist; create one with `jarchy keygen`") from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {path} is a directory") from None
    if text.startswith(WRAPPED):
        if passphrase is None:
            raise KeyFileError(f"key file {path} is protected by a passphrase")
        return OpenedKey(_parse(path, _unwrap(path, text, passphrase.get(path))), wrapped=True)
    return OpenedKey(_parse(path, text), wrapped=False)


def read_key_file(path: Path, passphrase: Passphrase | None = None, *, managed: bool = False) -> DataKey:
    """Read a key file; see `open_key_file`."""
    return open_key_file(path, passphrase, managed=managed).key


def key_file_is_wrapped(path: Path) -> bool:
    """Tell whether a key file is sealed under a passphrase (False if it cannot be read)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(WRAPPED)) == WRAPPED.encode()
    except OSError:
        return False


def write_key_file(
    path: Path,
    key: DataKey,
    *,
    passphrase: bytes | None = None,
    overwrite: bool = False,
    ops: int = ARGON2_OPS,
    mem: int = ARGON2_MEM,
) -> None:
    """Write a key durably and whole, readable by the owner only; never over another key unless asked."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = key_file_text(key, passphrase=passphrase, ops=ops, mem=mem)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # Created with 0600 from the start so the key is never briefly readable by others.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if overwrite:
            os.replace(temporary, path)
        else:
            # A hard link fails if the name exists: two first starts at once cannot both write a key.
            os.link(temporary, path)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite a key (data encrypted under it would be lost)"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    fsync_directory(path.parent)


def key_file_text(
    key: DataKey, *, passphrase: bytes | None = None, ops: int = ARGON2_OPS, mem: int = ARGON2_MEM
) -> str:
    """Return what a key file holds: the key's line, sealed under the passphrase if one is given."""
    return key.to_text() if passphrase is None else _wrap(key.to_text(), passphrase, ops, mem)


def create_key_file(path: Path, *, overwrite: bool = False, passphrase: bytes | None = None) -> DataKey:
    """Write a new random key to `path`, readable by the owner only."""
    key = DataKey.generate()
    write_key_file(path, key, passphrase=passphrase, overwrite=overwrite)
    return key


def destroy_key_file(path: Path) -> None:
    """Overwrite a key file with noise, then remove it (a missing file is fine)."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return
    try:
        os.write(fd, nacl.utils.random(max(os.fstat(fd).st_size, 1)))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_key(path: Path, *, configured: bool) -> DataKey:
    """Load the key at `path`; unless one was configured, create it there if missing."""
    if path.exists() or configured:
        return read_key_file(path)
    key = create_key_file(path)
    log.warning(
        "Created a new data key at %s; keep it apart from the database (set JARCHY_KEY_FILE to move it).",
        path,
    )
    return key


def _check_private(path: Path, what: str, *, managed: bool) -> None:
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"{what} {path} is not a regular file")
    forbidden = (stat.S_IWGRP | stat.S_IWOTH) if managed else (stat.S_IRWXG | stat.S_IRWXO)
    if mode & forbidden:
        raise KeyFileError(f"{what} {path} is readable by others (or writable); run `chmod 600 {path}`")


def _parse(path: Path, text: str) -> DataKey:
    try:
        if text.startswith(_V1):
            master = base64.b64decode(text.removeprefix(_V1), validate=True)
            if len(master) != _KEY_BYTES:
                raise ValueError("wrong length")
            return DataKey(master)
        if text.startswith(_V2):
            body = json.loads(text.removeprefix(_V2))
            master, identity = _unb64(body["rotating"]), _unb64(body["identity"])
            pinned = tuple(sorted((str(name), _unb64(v)) for name, v in body.get("pinned", {}).items()))
            if any(len(secret) != _KEY_BYTES for secret in (master, identity, *(v for _, v in pinned))):
                raise ValueError("wrong length")
            return DataKey(master, identity, pinned)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise KeyFileError(f"key file {path} is damaged") from None
    raise KeyFileError(f"key file {path} is not a jarchy key (expected a line starting {_V2} or {_V1})")


def _wrap(text: str, passphrase: bytes, ops: int, mem: int) -> str:
    salt = nacl.utils.random(argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, ops, mem))
    body = {
        "kdf": "argon2id",
        "ops": ops,
        "mem": mem,
        "salt": _b64(salt),
        "box": _b64(box.encrypt(text.encode())),
    }
    return WRAPPED + json.dumps(body, separators=(",", ":"), sort_keys=True)


def _unwrap(path: Path, text: str, passphrase: bytes) -> str:
    try:
        body = json.loads(text.removeprefix(WRAPPED))
        if body["kdf"] != "argon2id":
            raise ValueError("unknown kdf")
        salt, sealed, ops, mem = _unb64(body["salt"]), _unb64(body["box"]), int(body["ops"]), int(body["mem"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise KeyFileError(f"key file {path} is damaged") from None
    try:
        key = argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, ops, mem)
        opened: bytes = nacl.secret.SecretBox(key).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise KeyFileError(f"the passphrase does not open the key file {path}") from None
    return opened.decode("ascii", errors="replace").strip()


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _unb64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not base64 text")
    return base64.b64decode(value, validate=True)
