"""The data key apart from the data: where it is found, what a wrong or missing one does, passphrases."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import pty
import re
import select
import signal
import sqlite3
import stat
import sys
import time
from pathlib import Path

import nacl.hash
import pytest
from nacl.encoding import RawEncoder

from bot.cli import main
from bot.runtime.clock import SystemClock
from bot.runtime.outbox import OutgoingMessage
from bot.security.key_guard import KEY_CHECK, KeyGrant
from bot.security.keys import (
    LONG_LIVED,
    ROTATING,
    WRAPPED,
    DataKey,
    KeyFileError,
    Passphrase,
    create_key_file,
    key_check,
    read_key_file,
    write_key_file,
)
from bot.settings import KEY_BESIDE_DATA_CONSENT, Settings, SettingsError
from bot.wiring import build_limiter, open_services
from storage.database import Database
from tests.conftest import TEST_TOKEN, make_settings
from tests.fakebot import FakeBotApi
from tests.workspace_seed import Seed, seed_reports

ROOT = Path(__file__).resolve().parents[3]
ADMIN = 5001
REPORTER = 601


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _restore_logging(restore_logging: None) -> None:
    """The command line's logging set-up is undone after each test (tests/conftest.py)."""


async def seed(settings: Settings) -> None:
    """Open the real services on the settings and leave data behind: an admin, a report, a queued message."""
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        reporter = services.pseudonyms.of_user(REPORTER)
        await seed_reports(
            services.db, services.cipher, [Seed(reporter=reporter, chat=REPORTER)], clock.now()
        )
        message = OutgoingMessage(
            "sendMessage", {"chat_id": REPORTER, "text": "queued"}, kind="test", recipient_user_id=REPORTER
        )
        async with services.db.write() as conn:
            await services.outbox.enqueue(conn, [message])
    finally:
        await services.close()


def seeded(tmp_path: Path, **overrides: object) -> Settings:
    """Settings with an admin, and a database that holds data (made by the real services)."""
    settings = make_settings(tmp_path, admin_ids=frozenset({ADMIN}), **overrides)
    asyncio.run(seed(settings))
    return settings


def digests(settings: Settings) -> dict[str, str]:
    """Return a hash of every table's rows, and of every file in the data directory."""
    found: dict[str, str] = {}
    with contextlib.closing(sqlite3.connect(settings.data_dir / "jarchy.db")) as raw:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in sorted(tables):
            rows = raw.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()  # noqa: S608 - our names
            found[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    for path in sorted(settings.data_dir.rglob("*")):
        if path.is_file() and not path.name.startswith("jarchy.db"):
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def stored_check(settings: Settings) -> str | None:
    """Return the key check the database holds."""
    with contextlib.closing(sqlite3.connect(settings.data_dir / "jarchy.db")) as raw:
        row = raw.execute("SELECT value FROM bot_state WHERE key = ?", (KEY_CHECK,)).fetchone()
    return None if row is None else str(row[0])


def use_cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **variables: str | Path) -> None:
    """Set the environment `main` reads, with nothing from the machine running the tests."""
    monkeypatch.chdir(tmp_path)  # no .env from elsewhere
    for name in ("XDG_CONFIG_HOME", "CREDENTIALS_DIRECTORY", "JARCHY_KEY_FILE", "JARCHY_KEY_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JARCHY_KEY_BESIDE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JARCHY_BOT_TOKEN", TEST_TOKEN)
    # Nothing listens there: a start that got as far as Telegram would fail loudly.
    monkeypatch.setenv("JARCHY_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("JARCHY_DATA_DIR", str(tmp_path / "data"))
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """Return the only line on stderr (failing if there are more)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def key_files(tmp_path: Path) -> list[Path]:
    """Every key file anywhere under tmp_path."""
    return sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name in ("jarchy.key", "jarchy_key"))


# ------------------------------------------------------------------------------------- where the key is


async def test_a_fresh_machine_gets_its_key_in_the_config_directory_once(tmp_path: Path) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(home),
        "JARCHY_BOT_TOKEN": TEST_TOKEN,
        "JARCHY_POLLING_TIMEOUT_S": "1",
    }
    async with FakeBotApi(TEST_TOKEN) as fake:
        env["JARCHY_API_URL"] = fake.url
        first = await _run_until_polling(fake, env, work, tmp_path / "first.log")
        key_path = home / ".config" / "jarchy" / "jarchy.key"
        assert key_path.is_file() and stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert not (work / "data" / "jarchy.key").exists()
        created = [line for line in first.splitlines() if "Created a new data key" in line]
        assert len(created) == 1 and str(key_path) in created[0] and "JARCHY_KEY_FILE" in created[0]
        key_bytes = key_path.read_bytes()
        second = await _run_until_polling(fake, env, work, tmp_path / "second.log")
    assert "Created a new data key" not in second
    assert key_path.read_bytes() == key_bytes
    settings = make_settings(tmp_path, data_dir=work / "data")
    assert stored_check(settings) == key_check(read_key_file(key_path))


async def _run_until_polling(fake: FakeBotApi, env: dict[str, str], cwd: Path, log: Path) -> str:
    # A poll the previous run left open is logged when the fake answers it, after that run has gone:
    # only a poll that arrived after this start says this run is polling.
    started = fake.clock()
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=env, cwd=cwd, stdout=sink, stderr=sink
        )
    try:
        await fake.wait_for("getUpdates", timeout=30, predicate=lambda call: call.at >= started)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    output = await asyncio.to_thread(log.read_text)
    assert process.returncode == 0, output
    return output


def test_the_default_place_follows_xdg_then_home(tmp_path: Path) -> None:
    base = {"JARCHY_BOT_TOKEN": TEST_TOKEN, "HOME": "/home/aida", "JARCHY_DATA_DIR": str(tmp_path)}
    none = tmp_path / "none"
    xdg = Settings.from_env({**base, "XDG_CONFIG_HOME": "/srv/config"}, env_file=none)
    assert xdg.key_location.path == Path("/srv/config/jarchy/jarchy.key")
    assert xdg.key_location.source == "default"
    relative = Settings.from_env({**base, "XDG_CONFIG_HOME": "config"}, env_file=none)
    assert relative.key_location.path == Path("/home/aida/.config/jarchy/jarchy.key")
    configured = Settings.from_env({**base, "JARCHY_KEY_FILE": "/mnt/usb/jarchy.key"}, env_file=none)
    assert (configured.key_location.path, configured.key_location.source) == (
        Path("/mnt/usb/jarchy.key"),
        "JARCHY_KEY_FILE",
    )


async def test_a_systemd_credential_or_a_docker_secret_is_found_and_used(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    key = create_key_file(credentials / "jarchy_key")
    os.chmod(credentials / "jarchy_key", 0o444)  # a service manager's mode is its own business
    env = {
        "JARCHY_BOT_TOKEN": TEST_TOKEN,
        "JARCHY_DATA_DIR": str(tmp_path / "data"),
        "HOME": str(tmp_path / "home"),
        "CREDENTIALS_DIRECTORY": str(credentials),
    }
    settings = Settings.from_env(env, env_file=tmp_path / "none")
    assert settings.key_location.source == "systemd credential" and settings.key_location.managed
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        assert services.key.derive("field-encryption") == key.derive("field-encryption")
    finally:
        await services.close()
    assert stored_check(settings) == key_check(key)

    secrets_dir = tmp_path / "secrets"
    secret = create_key_file(secrets_dir / "jarchy_key")
    docker = make_settings(tmp_path / "docker", key_file=None, secrets_dir=secrets_dir)
    assert docker.key_location.source == "docker secret"
    services = await open_services(docker, clock, build_limiter(docker, clock))
    try:
        assert services.key.derive("pseudonym") == secret.derive("pseudonym")
    finally:
        await services.close()


async def test_no_key_is_ever_created_where_a_service_manager_provides_it(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    settings = make_settings(tmp_path, key_file=secrets_dir / "jarchy_key", secrets_dir=secrets_dir)
    clock = SystemClock()
    with pytest.raises(KeyFileError, match="jarchy keygen --out"):
        await open_services(settings, clock, build_limiter(settings, clock))
    assert key_files(tmp_path) == []


# ------------------------------------------------------------------------------- apart from the data


def test_run_refuses_a_key_inside_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    create_key_file(data / "jarchy.key")
    (tmp_path / "elsewhere").symlink_to(data)
    # Configured there, found there by the old default, or reached through a symbolic link.
    for configured in (data / "jarchy.key", None, tmp_path / "elsewhere" / "jarchy.key"):
        use_cli_env(monkeypatch, tmp_path, **({"JARCHY_KEY_FILE": configured} if configured else {}))
        assert main(["run"]) == 2
        line = one_error_line(capsys)
        assert "inside the data directory" in line and KEY_BESIDE_DATA_CONSENT in line
    assert not (data / "jarchy.db").exists()


async def test_the_consent_lets_a_key_beside_the_data_start(tmp_path: Path) -> None:
    inside = make_settings(tmp_path, key_file=tmp_path / "data" / "sub" / "jarchy.key")
    clock = SystemClock()
    with pytest.raises(KeyFileError, match="inside the data directory"):
        await open_services(inside, clock, build_limiter(inside, clock))
    assert key_files(tmp_path) == []
    consented = make_settings(tmp_path, key_file=inside.key_file, key_beside_data=True)
    services = await open_services(consented, clock, build_limiter(consented, clock))
    await services.close()
    assert key_files(tmp_path) == [tmp_path / "data" / "sub" / "jarchy.key"]
    none = tmp_path / "none"
    with pytest.raises(SettingsError, match=KEY_BESIDE_DATA_CONSENT):
        Settings.from_env({"JARCHY_BOT_TOKEN": TEST_TOKEN, "JARCHY_KEY_BESIDE_DATA": "true"}, env_file=none)
    consent = {"JARCHY_BOT_TOKEN": TEST_TOKEN, "JARCHY_KEY_BESIDE_DATA": KEY_BESIDE_DATA_CONSENT}
    assert Settings.from_env(consent, env_file=none).key_beside_data


# --------------------------------------------------------------------------- the key check at start


def test_a_wrong_key_stops_the_start_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = seeded(tmp_path)
    assert settings.key_file is not None
    create_key_file(settings.key_file, overwrite=True)  # somebody else's key
    before = digests(settings)
    use_cli_env(monkeypatch, tmp_path, JARCHY_KEY_FILE=settings.key_file)
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("jarchy: the data key does not match this database (key check failed); ")
    for command in (["export", "--out", str(tmp_path / "out.csv")], ["check"]):
        assert main(command) != 0
        assert "does not match this database" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()
    # The services themselves refuse too (the path `run` takes after its first check).
    clock = SystemClock()
    with pytest.raises(KeyFileError, match="key check failed"):
        asyncio.run(open_services(settings, clock, build_limiter(settings, clock)))
    assert digests(settings) == before


def test_a_missing_key_stops_the_start_creates_none_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = seeded(tmp_path)
    assert settings.key_file is not None
    settings.key_file.unlink()
    before = digests(settings)
    # Configured and gone, or never configured on this machine (the default place is empty).
    for variables in ({"JARCHY_KEY_FILE": settings.key_file}, {}):
        use_cli_env(monkeypatch, tmp_path, **variables)
        assert main(["run"]) == 2
        line = one_error_line(capsys)
        assert line.startswith("jarchy: the data key is missing: ") and "no key was created" in line
    assert key_files(tmp_path) == []
    assert digests(settings) == before


def test_an_old_database_without_a_key_check_accepts_only_a_key_that_opens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = seeded(tmp_path)
    assert settings.key_file is not None
    with contextlib.closing(sqlite3.connect(settings.data_dir / "jarchy.db")) as raw, raw:
        raw.execute("DELETE FROM bot_state WHERE key = ?", (KEY_CHECK,))
    right = settings.key_file.read_bytes()
    create_key_file(settings.key_file, overwrite=True)
    before = digests(settings)
    use_cli_env(monkeypatch, tmp_path, JARCHY_KEY_FILE=settings.key_file)
    assert main(["run"]) == 2
    assert "none of its encrypted values opens" in one_error_line(capsys)
    assert digests(settings) == before
    settings.key_file.write_bytes(right)
    clock = SystemClock()
    services = asyncio.run(open_services(settings, clock, build_limiter(settings, clock)))
    asyncio.run(services.close())
    assert stored_check(settings) == key_check(read_key_file(settings.key_file))


@pytest.mark.parametrize(
    ("command", "code"),
    [(["check"], 0), (["migrate"], 0), (["export", "--out", "x.csv"], 2), (["audit", "verify"], 2)],
)
def test_commands_other_than_run_never_create_a_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    code: int,
) -> None:
    use_cli_env(monkeypatch, tmp_path)
    assert main(command) == code
    out, err = capsys.readouterr()
    default = tmp_path / "home" / ".config" / "jarchy" / "jarchy.key"
    if command == ["check"]:
        assert f"`jarchy run` will create one at {default}" in out
    if code == 2:
        assert err.strip().startswith("jarchy: no data key at") and len(err.strip().splitlines()) == 1
    assert key_files(tmp_path) == []
    assert not (tmp_path / "x.csv").exists()


async def test_the_key_check_is_written_once_and_a_second_key_loses(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'race.db'}")
    try:
        from storage import migrations

        await migrations.upgrade(db)
        first, second = DataKey.generate(), DataKey.generate()
        await KeyGrant(first, key_check(first)).settle(db)
        with pytest.raises(KeyFileError, match="key check failed"):
            await KeyGrant(second, key_check(second)).settle(db)
        await KeyGrant(first, key_check(first)).settle(db)  # the same key again is fine
    finally:
        await db.close()


# ----------------------------------------------------------------------------------------- passphrases


def test_a_passphrase_wrapped_key_opens_only_with_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_path, phrase = tmp_path / "keys" / "jarchy.key", tmp_path / "passphrase"
    phrase.write_text("correct horse battery staple\n")
    phrase.chmod(0o600)
    use_cli_env(monkeypatch, tmp_path, JARCHY_KEY_PASSPHRASE_FILE=phrase)
    assert main(["keygen", "--passphrase", "--out", str(key_path)]) == 0
    text = key_path.read_text()
    assert text.startswith(WRAPPED) and "jarchy-key-v2" not in text
    settings = seeded(tmp_path, key_file=key_path, key_passphrase_file=phrase)
    assert stored_check(settings) == key_check(read_key_file(key_path, Passphrase(phrase)))
    before = digests(settings)
    wrong = tmp_path / "wrong"
    wrong.write_text("incorrect horse\n")
    wrong.chmod(0o600)
    use_cli_env(monkeypatch, tmp_path, JARCHY_KEY_FILE=key_path, JARCHY_KEY_PASSPHRASE_FILE=wrong)
    assert main(["run"]) == 2
    assert one_error_line(capsys) == f"jarchy: the passphrase does not open the key file {key_path}"
    use_cli_env(monkeypatch, tmp_path, JARCHY_KEY_FILE=key_path)  # no file, and no terminal to ask at
    assert main(["run"]) == 2
    assert "protected by a passphrase" in one_error_line(capsys)
    assert digests(settings) == before


def test_the_passphrase_can_be_typed_at_the_terminal(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "jarchy.key"
    settings = seeded(tmp_path, key_file=key_path)
    key = read_key_file(key_path)
    write_key_file(key_path, key, passphrase=b"typed at start", overwrite=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path / "home"),
        "JARCHY_BOT_TOKEN": TEST_TOKEN,
        "JARCHY_DATA_DIR": str(settings.data_dir),
        "JARCHY_KEY_FILE": str(key_path),
    }
    output, status = _on_a_terminal([sys.executable, "-m", "bot", "check"], env, tmp_path, b"typed at start")
    assert "Passphrase for the data key" in output
    assert "key: matches this database" in output, output
    assert status == 0, output


def _on_a_terminal(argv: list[str], env: dict[str, str], cwd: Path, answer: bytes) -> tuple[str, int]:
    """Run a command with a terminal of its own, typing `answer` when it asks for a passphrase."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command, with the terminal as its controlling tty
        os.chdir(cwd)
        os.execve(argv[0], argv, env)  # noqa: S606 - our own interpreter, no shell
    output, answered, deadline = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"Passphrase" in output:
                os.write(fd, answer + b"\n")
                answered = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return output.decode(errors="replace"), os.waitstatus_to_exitcode(status)


# ------------------------------------------------------------------------------------ the key's format


def test_a_v1_key_file_keeps_every_subkey_it_had(tmp_path: Path) -> None:
    master = bytes(range(32))
    path = tmp_path / "old.key"
    path.write_text("jarchy-key-v1:" + base64.b64encode(master).decode() + "\n")
    path.chmod(0o600)
    key = read_key_file(path)
    for purpose in ("field-encryption", "pseudonym", "audit.chain", "transient.wrap", "reporter-code"):
        expected = nacl.hash.blake2b(
            purpose.encode(), digest_size=32, key=master, person=b"jarchy-subkey-v1", encoder=RawEncoder
        )
        assert key.derive(purpose) == expected, purpose


def test_a_rotated_key_keeps_identity_subkeys_and_nothing_of_the_old_encryption_key(tmp_path: Path) -> None:
    old = DataKey(bytes(range(32)))
    new = old.rotated()
    for purpose in LONG_LIVED:
        assert new.derive(purpose) == old.derive(purpose), purpose
    for purpose in ROTATING:
        assert new.derive(purpose) != old.derive(purpose), purpose
    text = new.to_text()
    assert base64.b64encode(old.master).decode() not in text
    assert base64.b64encode(old.derive("field-encryption")).decode() not in text
    write_key_file(tmp_path / "new.key", new)
    again = read_key_file(tmp_path / "new.key")
    assert all(again.derive(p) == new.derive(p) for p in ROTATING | LONG_LIVED | {"something-new"})
    assert key_check(again) != key_check(old)
    assert key_check(again).rsplit(":", 1)[1] == key_check(old).rsplit(":", 1)[1]  # the identity half


def test_every_subkey_purpose_in_the_code_is_classified() -> None:
    purposes: set[str] = set()
    for folder in ("bot", "storage", "handlers"):
        for source in (ROOT / folder).rglob("*.py"):
            purposes |= set(re.findall(r"\.derive\(\s*\"([^\"]+)\"\s*\)", source.read_text()))
    assert purposes, "the scan found nothing: the pattern is wrong"
    unclassified = purposes - ROTATING - LONG_LIVED
    assert not unclassified, (
        f"subkey purposes {sorted(unclassified)} are in neither ROTATING (rotate-key must renew what "
        "they protect) nor LONG_LIVED (kept across rotations) in bot/security/keys.py"
    )


def test_damaged_and_foreign_key_files_are_refused(tmp_path: Path) -> None:
    for name, text, problem in [
        ("foreign", "-----BEGIN PRIVATE KEY-----", "is not a jarchy key"),
        ("short", "jarchy-key-v1:" + base64.b64encode(b"short").decode(), "damaged"),
        ("v2", 'jarchy-key-v2:{"rotating":"@@"}', "damaged"),
        ("wrapped", WRAPPED + "{}", "damaged"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(KeyFileError, match=problem):
            read_key_file(path, Passphrase(ask=lambda _prompt: "x"))


def test_keygen_can_write_to_standard_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_cli_env(monkeypatch, tmp_path)
    assert main(["keygen", "--out", "-"]) == 0
    path = tmp_path / "from-stdout.key"
    path.write_text(capsys.readouterr().out)
    path.chmod(0o600)
    assert read_key_file(path).derive("pseudonym")
