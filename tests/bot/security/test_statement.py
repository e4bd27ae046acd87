"""The signed statement of official bots: it round-trips, and a changed text, signature or key fails."""

from __future__ import annotations

import stat
from datetime import date
from pathlib import Path

import nacl.signing
import pytest

from bot.cli import main
from bot.security.statement import (
    SigningKeyError,
    StatementError,
    check,
    create_signing_key,
    public_text,
    read_signing_key,
    statement,
)
from tests.bot.security.test_keys import use_cli_env

DAY = date(2026, 12, 3)
NAMES = ("jarchy_main_bot", "jarchy_backup_bot")


def test_a_statement_round_trips_and_survives_a_web_page() -> None:
    key = nacl.signing.SigningKey.generate()
    text = statement(NAMES, DAY, key)
    checked = check(text, key.verify_key)
    assert checked.names == NAMES and checked.day == "2026-12-03"
    # Pasted into a page or a channel: other line endings, trailing and leading spaces, text around it.
    pasted = (
        "Our bots, signed:\r\n\r\n" + "\r\n".join(f"  {line}   " for line in text.split("\n")) + "\nThanks"
    )
    assert check(pasted, key.verify_key).names == NAMES


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("@jarchy_backup_bot", "@jarchy_backup_b0t"),  # a clone's name swapped in
        ("2026-12-03", "2027-12-03"),  # the date
        ("Any other bot", "Every other bot"),  # the wording
    ],
)
def test_a_changed_statement_fails(before: str, after: str) -> None:
    key = nacl.signing.SigningKey.generate()
    text = statement(NAMES, DAY, key)
    with pytest.raises(StatementError, match="signature does not match"):
        check(text.replace(before, after), key.verify_key)


def test_a_line_added_or_the_signature_changed_fails() -> None:
    key = nacl.signing.SigningKey.generate()
    text = statement(NAMES, DAY, key)
    with pytest.raises(StatementError, match="signature does not match"):
        check(text.replace("@jarchy_backup_bot", "@jarchy_backup_bot\n@evil_clone_bot"), key.verify_key)
    signature = next(line for line in text.splitlines() if line.startswith("Signature: "))
    flipped = signature[:-4] + ("AAA=" if not signature.endswith("AAA=") else "BBB=")
    with pytest.raises(StatementError):
        check(text.replace(signature, flipped), key.verify_key)
    with pytest.raises(StatementError, match="not a jarchy statement"):
        check("hello", key.verify_key)


def test_a_statement_signed_by_another_key_fails() -> None:
    ours, theirs = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    forged = statement(NAMES, DAY, theirs)
    with pytest.raises(StatementError, match="another key"):
        check(forged, ours.verify_key)
    # Even with our fingerprint written into it, their signature does not hold under our key.
    ours_text = statement(NAMES, DAY, ours)
    fingerprint_line = next(line for line in ours_text.splitlines() if line.startswith("Key fingerprint"))
    theirs_line = next(line for line in forged.splitlines() if line.startswith("Key fingerprint"))
    with pytest.raises(StatementError, match="signature does not match"):
        check(forged.replace(theirs_line, fingerprint_line), ours.verify_key)


def test_the_signing_key_is_owner_only_and_never_in_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = tmp_path / "org" / "signing.key"
    key = create_signing_key(path, data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(read_signing_key(path, data)) == bytes(key)
    with pytest.raises(SigningKeyError, match="exists already"):
        create_signing_key(path, data)
    with pytest.raises(SigningKeyError, match="inside the data directory"):
        create_signing_key(data / "signing.key", data)
    path.chmod(0o644)
    with pytest.raises(SigningKeyError, match="readable by others"):
        read_signing_key(path, data)


def test_the_command_prints_a_statement_and_checks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_path = tmp_path / "org" / "statement.key"
    use_cli_env(
        monkeypatch,
        tmp_path,
        JARCHY_SIGNING_KEY_FILE=key_path,
        JARCHY_OFFICIAL_BOTS="@Jarchy_Backup_bot",
    )
    assert main(["verify-statement"]) == 2  # no key yet: one line says how to make one
    assert "--new-key" in capsys.readouterr().err
    assert main(["verify-statement", "--new-key", "--bot", "@Jarchy_Main_bot"]) == 0
    printed = capsys.readouterr().out
    assert "@jarchy_main_bot\n@jarchy_backup_bot\n" in printed
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(printed)
    bad.write_text(printed.replace("@jarchy_backup_bot", "@jarchy_clone_bot"))

    assert main(["verify-statement", "--check", str(good)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "verifies" in out[0] and "@jarchy_backup_bot" in out[0]
    assert main(["verify-statement", "--check", str(bad)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "does NOT verify" in out[0]

    # Checked elsewhere, with only the published public key: ours holds, another one does not.
    public = public_text(read_signing_key(key_path, tmp_path / "data").verify_key)
    monkeypatch.delenv("JARCHY_SIGNING_KEY_FILE")
    assert main(["verify-statement", "--check", str(good), "--public-key", public]) == 0
    other = public_text(nacl.signing.SigningKey.generate().verify_key)
    capsys.readouterr()
    assert main(["verify-statement", "--check", str(good), "--public-key", other]) == 1
    assert "another key" in capsys.readouterr().out
