"""The organisation's signed statement of its official bots, for its website and channel.

`jarchy verify-statement` prints the usernames (and the day) signed with an Ed25519 key of the organisation;
`--check FILE` verifies one. The key is the organisation's, not the bot's: it lives in its own file (never in
the data directory beside the database), and a seized server without it cannot sign a clone's username.

What is signed is the statement's text between its first line and the signature block, with line endings and
trailing spaces made uniform (web pages and channels change those), after a domain-separating label.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import nacl.exceptions
import nacl.signing

from bot.domain.errors import JarchyError

BEGIN = "-----BEGIN JARCHY OFFICIAL BOTS-----"
SIGNATURE = "-----SIGNATURE-----"
END = "-----END JARCHY OFFICIAL BOTS-----"
_LABEL = b"jarchy official bots statement v1\n"


class StatementError(JarchyError):
    """A statement that cannot be read or does not verify; the message is one line for the admin."""


class SigningKeyError(JarchyError):
    """The signing key is missing, unreadable, or in a place it must not be."""


@dataclass(frozen=True)
class Checked:
    """A statement that verified: the day it names, the bots it lists, the key that signed it."""

    day: str
    names: tuple[str, ...]
    fingerprint: str


def fingerprint(key: nacl.signing.VerifyKey) -> str:
    """Return a short, readable fingerprint of a public key (SHA-256, first 16 bytes, in hex groups)."""
    digest = hashlib.sha256(bytes(key)).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def public_text(key: nacl.signing.VerifyKey) -> str:
    """Return a public key as base64, the form `--public-key` takes."""
    return base64.b64encode(bytes(key)).decode()


def create_signing_key(path: Path, data_dir: Path) -> nacl.signing.SigningKey:
    """Write a new signing key readable by its owner only; refuse to overwrite one or to write it in the
    data directory (a copy of the data directory must never carry the power to sign)."""
    _refuse_inside(path, data_dir)
    key = nacl.signing.SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path} exists already; it was not replaced") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(bytes(key)).decode() + "\n")
    return key


def read_signing_key(path: Path, data_dir: Path) -> nacl.signing.SigningKey:
    """Read the signing key written by `create_signing_key`."""
    _refuse_inside(path, data_dir)
    try:
        raw = path.read_text().strip()
    except FileNotFoundError:
        raise SigningKeyError(
            f"no signing key at {path}; create one with `jarchy verify-statement --new-key`"
        ) from None
    except OSError as error:
        raise SigningKeyError(f"cannot read {path}: {error.strerror}") from None
    if path.stat().st_mode & 0o077:
        raise SigningKeyError(f"{path} is readable by others; run chmod 600 {path}")
    try:
        return nacl.signing.SigningKey(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise SigningKeyError(f"{path} does not hold a signing key") from None


def parse_public_key(text: str) -> nacl.signing.VerifyKey:
    """Read a public key given as base64 (as printed in a statement)."""
    try:
        return nacl.signing.VerifyKey(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise SigningKeyError("the public key is not 32 bytes of base64") from None


def statement(names: Sequence[str], day: date, key: nacl.signing.SigningKey) -> str:
    """Return the signed statement listing `names` (usernames without @) as of `day`."""
    body = [
        f"Official Telegram bots of our organisation as of {day.isoformat()}:",
        *(f"@{name}" for name in names),
        "Any other bot that uses our name is not ours. Check a bot with /verify in one of these.",
    ]
    signed = key.sign(_signed_bytes(body)).signature
    return "\n".join(
        [
            BEGIN,
            *body,
            SIGNATURE,
            f"Signature: {base64.b64encode(signed).decode()}",
            f"Key fingerprint: {fingerprint(key.verify_key)}",
            f"Public key: {public_text(key.verify_key)}",
            END,
            "",
        ]
    )


def check(text: str, key: nacl.signing.VerifyKey) -> Checked:
    """Verify a statement against the organisation's public key; StatementError says what is wrong."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line.strip() for line in lines]
    try:
        start, middle, end = lines.index(BEGIN), lines.index(SIGNATURE), lines.index(END)
    except ValueError:
        raise StatementError(
            "this is not a jarchy statement (its begin, signature or end line is missing)"
        ) from None
    if not start < middle < end:
        raise StatementError("this is not a jarchy statement (its parts are out of order)")
    body = lines[start + 1 : middle]
    fields = dict(line.split(": ", 1) for line in lines[middle + 1 : end] if ": " in line)
    if "Signature" not in fields:
        raise StatementError("the statement has no signature")
    stated = fields.get("Key fingerprint", "")
    if stated and stated != fingerprint(key):
        raise StatementError(
            f"signed by another key (fingerprint {stated}), not by the organisation's ({fingerprint(key)})"
        )
    try:
        signature = base64.b64decode(fields["Signature"], validate=True)
        key.verify(_signed_bytes(body), signature)
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
        raise StatementError(
            "the signature does not match: the statement was changed, or not signed by this key"
        ) from None
    day = body[0].rsplit(" ", 1)[-1].rstrip(":") if body else ""
    names = tuple(line[1:] for line in body if line.startswith("@"))
    return Checked(day, names, fingerprint(key))


def _signed_bytes(body: Sequence[str]) -> bytes:
    return _LABEL + "\n".join(line.strip() for line in body).encode()


def _refuse_inside(path: Path, data_dir: Path) -> None:
    if path.resolve().is_relative_to(data_dir.resolve()):
        raise SigningKeyError(
            f"{path} is inside the data directory {data_dir}; keep the signing key elsewhere "
            "(set JARCHY_SIGNING_KEY_FILE)"
        )
