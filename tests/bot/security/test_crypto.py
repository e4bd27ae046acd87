"""Keys, pseudonyms and field encryption."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.security import (
    Cipher,
    DataKey,
    DecryptionError,
    KeyFileError,
    Pseudonymizer,
    create_key_file,
    load_or_create_key,
)
from bot.security.keys import read_key_file


def test_keygen_writes_an_owner_only_key(tmp_path: Path) -> None:
    out = tmp_path / "k" / "jarchy.key"
    assert main(["keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    read_key_file(out)


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "jarchy.key"
    assert main(["keygen", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["keygen", "--out", str(out)]) == 2
    assert out.read_bytes() == before


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jarchy.key"
    create_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        read_key_file(path)


def test_first_start_creates_a_key_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "data" / "jarchy.key"
    first = load_or_create_key(path, configured=False)
    assert "apart from the database" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path, configured=False).master == first.master


def test_a_configured_key_that_is_missing_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_or_create_key(tmp_path / "missing.key", configured=True)


def test_pseudonyms_are_stable_keyed_and_not_the_id(tmp_path: Path) -> None:
    a = Pseudonymizer(create_key_file(tmp_path / "a.key"))
    b = Pseudonymizer(create_key_file(tmp_path / "b.key"))
    assert a.of_user(42) == a.of_user(42)
    assert a.of_user(42) != a.of_user(43)
    assert a.of_user(42) != b.of_user(42)
    assert a.of_user(42) != a.of_chat(42)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000), st.text(min_size=1, max_size=40))
def test_encryption_round_trips(plaintext: bytes, binding: str) -> None:
    sealed = _CIPHER.encrypt(plaintext, binding=binding)
    assert _CIPHER.decrypt(sealed, binding=binding) == plaintext
    assert len(sealed) == len(plaintext) + 1 + 24 + 16


def test_ciphertext_moved_to_another_row_does_not_decrypt(cipher: Cipher) -> None:
    sealed = cipher.encrypt_text("detained at the station", binding="reports.text:1")
    with pytest.raises(DecryptionError):
        cipher.decrypt_text(sealed, binding="reports.text:2")


def test_tampered_ciphertext_does_not_decrypt(cipher: Cipher) -> None:
    sealed = bytearray(cipher.encrypt_text("secret", binding="x"))
    sealed[-1] ^= 1
    with pytest.raises(DecryptionError):
        cipher.decrypt(bytes(sealed), binding="x")


def test_another_key_does_not_decrypt(tmp_path: Path, cipher: Cipher) -> None:
    other = Cipher(create_key_file(tmp_path / "other.key"))
    with pytest.raises(DecryptionError):
        other.decrypt(cipher.encrypt(b"x", binding="b"), binding="b")


_CIPHER = Cipher(DataKey(bytes(range(32))))
