"""The `jarchy` command: run, migrate, keygen, check, rotate-key, verify-statement."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot import fleet_cli
from bot.logs import configure_logging
from bot.runtime.proxy import proxy_secrets
from bot.security import KeyFileError
from bot.settings import Settings, SettingsError

if TYPE_CHECKING:
    from storage.database import Database

EXIT_CONFIG = 2
COPY_TO_VARIABLE = "JARCHY_COPY_TO_URL"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand; return the exit code."""
    # python-telegram-bot 22 reports retry_after as a timedelta only when asked; the int form is deprecated.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    # Everything the bot writes (database, evidence, key, heartbeat) is for its own user only.
    os.umask(0o077)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        if args.command == "keygen":
            return _keygen(args)
        settings = Settings.from_env(require_token=args.command in ("run", "serve", "check"))
        if args.command == "verify-statement":
            return _verify_statement(settings, args)
        if args.command == "health":
            return _health(settings)
    except SettingsError as error:
        print(f"jarchy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(
        settings.log_level,
        [
            settings.bot_token.get_secret_value(),
            *(token.get_secret_value() for token in settings.backup_bot_tokens),
            *proxy_secrets(settings.proxy_url),
        ],
    )
    try:
        if args.command in ("run", "serve"):
            return _run(settings, webhook=args.command == "serve")
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "audit":
            return asyncio.run(_audit_verify(settings, args.expect_head))
        if args.command == "export":
            return asyncio.run(_export(settings, args))
        if args.command == "db":
            return _db_copy(settings, args)
        if args.command == "bot":
            from bot.fleet_cli import bot_command

            return asyncio.run(bot_command(settings, args))
        if args.command == "rotate-key":
            return asyncio.run(_rotate_key(settings, args))
        return asyncio.run(_check(settings))
    except KeyFileError as error:
        print(f"jarchy: {error}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jarchy", description="A Telegram bot for rapid alerts and advocacy."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot with long polling (applies migrations first)")
    sub.add_parser(
        "serve", help="run the bot behind a webhook at JARCHY_WEBHOOK_URL (applies migrations first)"
    )
    sub.add_parser("migrate", help="apply database migrations and exit")
    keygen = sub.add_parser("keygen", help="write a new data key file (owner-only permissions)")
    keygen.add_argument(
        "--out",
        type=Path,
        help="where to write it, or - for standard output (default: JARCHY_KEY_FILE, else "
        "~/.config/jarchy/jarchy.key)",
    )
    keygen.add_argument(
        "--force", action="store_true", help="overwrite an existing key (its data becomes unreadable)"
    )
    keygen.add_argument(
        "--passphrase",
        action="store_true",
        help="seal the key under a passphrase (asked twice, or read from JARCHY_KEY_PASSPHRASE_FILE); "
        "the bot then needs it at every start",
    )
    rotate = sub.add_parser(
        "rotate-key",
        help="re-encrypt everything under a new data key, then destroy the old one (stop the bot first; "
        "run it again if it was interrupted)",
    )
    rotate.add_argument(
        "--out",
        type=Path,
        help="write the new key here instead of replacing the key file (needed for a credential or secret)",
    )
    sub.add_parser("check", help="validate settings, key and database; print what the bot would run with")
    sub.add_parser(
        "health", help="exit 0 if a running bot has signalled it is alive within the last 2 minutes"
    )
    fleet_cli.add_parser(sub)
    audit = sub.add_parser("audit", help="check the audit log")
    audit.add_argument("action", choices=["verify"], help="verify: recompute the hash chain, report breaks")
    audit.add_argument(
        "--expect-head",
        metavar="HASH",
        help="a chain head an admin was sent (or its first 16+ hex characters): fail unless that entry is "
        "still in the log and the chain runs unbroken from it to the seal",
    )
    db_cmd = sub.add_parser("db", help="copy the database to another (SQLite to PostgreSQL)")
    db_cmd.add_argument("action", choices=["copy"], help="copy: every row, sealed values as they are")
    target = db_cmd.add_mutually_exclusive_group()
    target.add_argument(
        "--to",
        metavar="URL",
        help=f"the target, e.g. postgresql+asyncpg://jarchy@host/jarchy (default: {COPY_TO_VARIABLE}); "
        "give the password by PGPASSWORD or ~/.pgpass, not here: the command line is visible to others",
    )
    target.add_argument(
        "--to-env", metavar="NAME", help="read the target's URL from this environment variable"
    )
    db_cmd.add_argument(
        "--retire-source",
        action="store_true",
        help="after a verified copy, empty the SQLite database (secure delete, VACUUM) and delete its files",
    )
    signed = sub.add_parser(
        "verify-statement",
        help="print the official bots' usernames signed with the organisation's Ed25519 key (for its website "
        "and channel), or check such a statement",
    )
    signed.add_argument(
        "--bot",
        action="append",
        default=[],
        metavar="@NAME",
        help="the main bot's username (repeatable; default: asked from Telegram with JARCHY_BOT_TOKEN); "
        "JARCHY_OFFICIAL_BOTS are listed after it",
    )
    signed.add_argument(
        "--new-key",
        action="store_true",
        help="create the signing key first (owner-only; at JARCHY_SIGNING_KEY_FILE, else "
        "~/.config/jarchy/statement-signing.key)",
    )
    signed.add_argument(
        "--check", type=Path, metavar="FILE", help="verify a statement: exit 0 if it holds, 1 if not"
    )
    signed.add_argument(
        "--public-key",
        metavar="BASE64",
        help="with --check: the organisation's public key (default: the signing key's)",
    )
    export = sub.add_parser("export", help="write reports as CSV or JSON (decrypted: keep the file safe)")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--out", type=Path, required=True, help="file to write (created with mode 600)")
    export.add_argument(
        "--since", help="only reports received since this date (YYYY-MM-DD) or for N days (7d)"
    )
    for name in ("status", "category", "region"):
        export.add_argument(f"--{name}", help=f"only reports with this {name} (as in /reports)")
    return parser


def _verify_statement(settings: Settings, args: argparse.Namespace) -> int:
    """Print a signed statement of the official bots, or check one (exit 0 holds, 1 does not, 2 setup)."""
    from bot.domain.identity import BadUsername, bot_username, official_usernames
    from bot.runtime.clock import SystemClock
    from bot.security.statement import (
        SigningKeyError,
        StatementError,
        check,
        create_signing_key,
        fingerprint,
        parse_public_key,
        read_signing_key,
        statement,
    )

    path = settings.resolved_signing_key_file
    try:
        if args.check is not None:
            if args.public_key:
                public = parse_public_key(args.public_key)
            elif path is not None:
                public = read_signing_key(path, settings.data_dir).verify_key
            else:
                raise SigningKeyError("give --public-key or set JARCHY_SIGNING_KEY_FILE")
            try:
                text = args.check.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                print(f"jarchy: cannot read {args.check}: {error}", file=sys.stderr)
                return EXIT_CONFIG
            try:
                checked = check(text, public)
            except StatementError as error:
                print(f"jarchy: statement does NOT verify: {error}")
                return 1
            bots = ", ".join(f"@{name}" for name in checked.names)
            print(f"jarchy: statement verifies: {bots} as of {checked.day}, key {checked.fingerprint}")
            return 0
        if path is None:
            raise SigningKeyError("set JARCHY_SIGNING_KEY_FILE (no home directory to keep the key in)")
        if args.new_key:
            key = create_signing_key(path, settings.data_dir)
            print(
                f"jarchy: created a signing key at {path} (fingerprint {fingerprint(key.verify_key)}); "
                "back it up offline and publish the fingerprint where people can compare it",
                file=sys.stderr,
            )
        else:
            key = read_signing_key(path, settings.data_dir)
    except SigningKeyError as error:
        print(f"jarchy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    main_bots = list(args.bot)
    if not main_bots:
        own = asyncio.run(_own_username(settings))
        if own is None:
            print(
                "jarchy: could not ask Telegram for the bot's username; give it with --bot @name",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        main_bots = [own, *asyncio.run(_backup_usernames(settings))]
    try:
        for name in main_bots:
            bot_username(name)
    except BadUsername:
        print(f"jarchy: --bot {name}: is not a Telegram username", file=sys.stderr)
        return EXIT_CONFIG
    names = official_usernames(None, [*main_bots, *settings.official_bots])
    print(statement(names, SystemClock().now().date(), key), end="")
    return 0


async def _backup_usernames(settings: Settings) -> list[str]:
    """Ask getMe for each backup bot's username (one that does not answer is named on stderr)."""
    from bot.runtime.fleet import ask_username, fleet_bots

    names: list[str] = []
    for bot in fleet_bots(settings)[1:]:
        answer = await ask_username(settings, bot)
        if isinstance(answer, str):
            names.append(answer)
        else:
            print(
                f"jarchy: backup bot {bot.bot_id} did not tell its username; add it with --bot @name",
                file=sys.stderr,
            )
    return names


async def _own_username(settings: Settings) -> str | None:
    """Ask getMe for the bot's username (None without a token or an answer)."""
    from bot.runtime.fleet import ask_username, fleet_bots

    if not settings.bot_token.get_secret_value():
        return None
    answer = await ask_username(settings, fleet_bots(settings)[0])
    return answer if isinstance(answer, str) else None


def _run(settings: Settings, *, webhook: bool = False) -> int:
    from bot.event_loop import event_loop_factory
    from bot.runner import run_polling, run_webhook
    from bot.runtime.inbox import FatalPollingError
    from bot.runtime.instance import DataDirInUse
    from bot.telegram_start import TokenRefused

    if webhook and not settings.webhook_url:
        print(
            "jarchy: JARCHY_WEBHOOK_URL: is not set. `jarchy serve` needs the public https address Telegram "
            "posts to (see README: webhook mode); `jarchy run` polls instead.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    # The key guard runs again when the services open; running it first as well means a wrong or missing
    # key stops the start at once, with its one line, before anything talks to Telegram.
    asyncio.run(_guard_key(settings))
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
            runner.run(run_webhook(settings) if webhook else run_polling(settings))
    # A refusal after the start (the token revoked while running, a webhook Telegram will not take) ends
    # the same way: one line, exit 2.
    except (DataDirInUse, TokenRefused, FatalPollingError) as error:
        print(f"jarchy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


async def _guard_key(settings: Settings) -> None:
    from bot.security.key_guard import guard_key, refuse_key_beside_data, refuse_retired
    from storage.database import Database

    refuse_key_beside_data(settings)  # before the database file is even opened
    refuse_retired(settings)
    db = Database.connect(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    try:
        await guard_key(settings, db, create=True)
    finally:
        await db.close()


def _health(settings: Settings) -> int:
    import time

    from bot.runner import HEARTBEAT_INTERVAL_S, heartbeat_path

    try:
        age = time.time() - heartbeat_path(settings).stat().st_mtime
    except FileNotFoundError:
        print("unhealthy: no heartbeat yet", file=sys.stderr)
        return 1
    if age > 4 * HEARTBEAT_INTERVAL_S:
        print(f"unhealthy: last heartbeat {age:.0f} s ago", file=sys.stderr)
        return 1
    print(f"healthy: last heartbeat {age:.0f} s ago")
    return 0


def _db_copy(settings: Settings, args: argparse.Namespace) -> int:
    from bot.runtime.instance import DataDirInUse, lock_transient_keys

    target_url = _copy_target(args)
    if target_url is None or "://" not in target_url or _same_database(target_url, settings.database_url):
        print(
            f"jarchy: --to (or --to-env NAME, or {COPY_TO_VARIABLE}) must be another database's URL (see "
            "JARCHY_DATABASE_URL)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.to is not None and _password_of(args.to):
        print(
            "jarchy: warning: the --to URL holds a password, which other users can read in the process list "
            f"and your shell keeps in its history; use --to-env NAME, {COPY_TO_VARIABLE}, PGPASSWORD or "
            "~/.pgpass instead",
            file=sys.stderr,
        )
    try:
        # The bot must be stopped: a row written during the copy could be missed. (The copy also holds the
        # SQLite database's write lock from start to end.)
        lock = lock_transient_keys(settings.data_dir)
    except DataDirInUse as error:
        print(f"jarchy: {error}; stop the bot before copying its database", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_copy(settings, target_url, retire_source=args.retire_source))
    finally:
        lock.close()


def _copy_target(args: argparse.Namespace) -> str | None:
    if args.to_env is not None:
        return os.environ.get(args.to_env) or None
    return args.to or os.environ.get(COPY_TO_VARIABLE) or None


def _password_of(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return bool(make_url(url).password)
    except ArgumentError:
        return False


def _same_database(one: str, other: str) -> bool:
    """Tell whether two URLs name one database: SQLite by resolved path, others by host, port and name."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        a, b = make_url(one), make_url(other)
    except ArgumentError:
        return one == other
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        if not a.database or not b.database or ":memory:" in (a.database, b.database):
            return a.database == b.database
        return Path(a.database).resolve() == Path(b.database).resolve()
    return (a.host or "localhost", a.port, a.database) == (b.host or "localhost", b.port, b.database)


async def _copy(settings: Settings, target_url: str, *, retire_source: bool = False) -> int:
    from dataclasses import replace
    from datetime import UTC, datetime

    from sqlalchemy.engine import make_url

    from bot.security.key_guard import guard_key
    from storage import migrations
    from storage.copy import CopyRefused, copy_database, finish_copy, mark_moved
    from storage.database import Database

    source = Database.connect(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    target = Database.connect(target_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    try:
        await guard_key(settings, source, create=False)  # the key opens the source: the copy will open too
        await migrations.upgrade(target)
        report = await copy_database(source, target)
    except CopyRefused as refusal:
        print(f"jarchy: {refusal}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        await source.close()
        await target.close()
    for name, count in report.source.items():
        deleted = report.deleted.get(name, 0)
        removed = f", {deleted} removed" if deleted else ""
        print(f"{name}: {count} rows ({report.written.get(name, 0)} copied now{removed})")
    if report.mismatched:
        print(
            f"jarchy: counts or contents differ in {', '.join(report.mismatched)}; run the copy again",
            file=sys.stderr,
        )
        return 1
    # The audit chain, report seals and evidence bindings, checked on the copy as `jarchy audit verify` does.
    verified = await _audit_verify(replace(settings, database_url=target_url), copying=True)
    if verified != 0:
        return verified
    target = Database.connect(target_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    try:
        await finish_copy(target)  # only now may the bot start on it
    finally:
        await target.close()
    print("copied and verified; set JARCHY_DATABASE_URL to the target and start the bot")
    parsed = make_url(settings.database_url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return 0
    if retire_source:
        files = _retire_source(settings, parsed.database)
        print(f"retired the source: emptied and deleted {', '.join(str(path) for path in files)}")
        return 0
    source = Database.connect(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    try:
        await mark_moved(source, datetime.now(UTC))
    finally:
        await source.close()
    print(
        f"the source {parsed.database} still holds everything (later /forget and purges never reach it); the "
        "bot now refuses to start on it. Delete it, or copy again with --retire-source, which empties and "
        "deletes it"
    )
    return 0


def _retire_source(settings: Settings, database: str) -> list[Path]:
    """Empty and delete the copied SQLite file; leave a note so a start still pointing at it stops."""
    from bot.security.key_guard import RETIRED_FILE
    from storage.copy import retire_sqlite_file

    retired = Path(database).resolve()
    files = retire_sqlite_file(retired)
    # Without it a start still pointing at the deleted file would begin an empty installation there.
    (settings.data_dir / RETIRED_FILE).write_text(f"{retired}\n", encoding="utf-8")
    return files


async def _migrate(settings: Settings) -> int:
    from storage import migrations
    from storage.database import Database

    db = Database.connect(settings.database_url)
    try:
        await migrations.upgrade(db)
        print(f"database is at revision {await migrations.current_revision(db)}")
    finally:
        await db.close()
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from bot.security.key_guard import passphrase_for
    from bot.security.keys import DataKey, key_file_text, write_key_file

    settings = Settings.from_env(require_token=False)
    out: Path = args.out or settings.key_file or settings.default_key_file
    try:
        secret = passphrase_for(settings).get(out, confirm=True) if args.passphrase else None
        key = DataKey.generate()
        if str(out) == "-":
            sys.stdout.write(key_file_text(key, passphrase=secret) + "\n")
            return 0
        write_key_file(out, key, passphrase=secret, overwrite=args.force)
    except KeyFileError as error:
        print(f"jarchy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    sealed = ", sealed under your passphrase" if secret is not None else ""
    print(
        f"wrote a new data key to {out} (mode 600{sealed}). Back it up somewhere safe, apart from the data."
    )
    if out.resolve() != settings.key_location.path.resolve():
        print(f"the bot reads {settings.key_location.path}: set JARCHY_KEY_FILE={out} to use this one")
    return 0


async def _check(settings: Settings) -> int:
    from storage import migrations
    from storage.database import Database

    for name, value in settings.describe():
        print(f"{name}={value}")
    from bot.security.key_guard import retired_sqlite

    problems: list[str] = []
    retired = retired_sqlite(settings)
    if retired is not None:
        # Connecting would create an empty file where the moved database was.
        print(
            f"database: {retired} was moved to PostgreSQL and deleted by `jarchy db copy --retire-source`; "
            "set JARCHY_DATABASE_URL to the PostgreSQL database",
            file=sys.stderr,
        )
        return 1
    db = Database.connect(settings.database_url)
    try:
        current, head = await migrations.current_revision(db), migrations.head_revision()
        state = "up to date" if current == head else f"at {current or 'empty'}, will migrate to {head}"
        print(f"database: reachable, {state}")
        problems += await _check_key(settings, db)
        if current == head:
            print(await _held_alerts(db))
    except Exception as error:
        problems.append(f"database: {type(error).__name__}: {error}")
    finally:
        await db.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


async def _check_key(settings: Settings, db: Database) -> list[str]:
    """Say where the key is and whether it opens this database; never create one."""
    from bot.security.key_guard import (
        ROTATION_UNFINISHED,
        beside_data,
        beside_data_message,
        database_state,
        guard_key,
        refuse_moved_or_copying,
    )
    from bot.security.keys import key_file_is_wrapped

    location = settings.key_location
    sealed = ", sealed under a passphrase" if key_file_is_wrapped(location.path) else ""
    print(f"key: {location.path} ({location.source}{sealed})")
    problems: list[str] = []
    if not settings.key_beside_data and beside_data(settings, location.path):
        problems.append(f"key: `jarchy run` refuses it: {beside_data_message(settings, location.path)}")
    state = await database_state(db)
    try:
        refuse_moved_or_copying(state)
    except KeyFileError as error:
        return [*problems, f"database: {error}"]
    if state.rotation is not None:
        return [*problems, f"key: {ROTATION_UNFINISHED}"]
    if not location.path.exists() and not state.holds_data and not location.managed:
        print(f"key: none yet; `jarchy run` will create one at {location.path} (the database is empty)")
        return problems
    try:
        grant = await guard_key(settings, db, create=False)
    except KeyFileError as error:
        return [*problems, f"key: {error}"]
    if grant.pending_check is None:
        print("key: matches this database (key check)")
    else:
        print("key: readable; the next `jarchy run` records its key check in the database")
    return problems


async def _rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    from bot.services.upkeep.key_rotation import rotate_key

    # A test hook: stop once this many values are re-encrypted, so a test can kill the process half-way.
    pause = os.environ.get("JARCHY_ROTATE_PAUSE_AFTER", "").strip()
    done = await rotate_key(
        settings,
        out=args.out,
        pause_after=int(pause) if pause.isdigit() else None,
        say=lambda line: print(line, flush=True),
    )
    print(
        f"rotate-key: done; {sum(done.resealed.values())} values re-encrypted ({done.already} already were), "
        f"{done.files} evidence files resealed; the data key is now {done.key_file}. Pseudonyms, the audit "
        "chain and reporters' codes keep their keys: they cannot be re-derived."
    )
    for name, count in sorted(done.unreadable.items()):
        print(
            f"rotate-key: {count} value(s) of {name} open under neither key; left as they were",
            file=sys.stderr,
        )
    if done.missing_files:
        print(
            f"rotate-key: {done.missing_files} evidence file(s) named in the database are missing",
            file=sys.stderr,
        )
    if done.old_key_left is not None:
        print(
            f"rotate-key: the old key {done.old_key_left} is a credential jarchy cannot remove: provide "
            f"{done.key_file} in its place, then delete {done.key_file}",
            file=sys.stderr,
        )
    elif args.out is not None:
        print(f"rotate-key: set JARCHY_KEY_FILE={done.key_file} before starting the bot", file=sys.stderr)
    return 0


async def _held_alerts(db: Database) -> str:
    """Say how many alerts wait for the coordinators' chat, and why (read without the key)."""
    from bot.services.triage.alerts import ALERT_KINDS
    from bot.services.triage.watch import INCIDENT
    from storage.outbox import OutboxRepository
    from storage.state import StateRepository

    async with db.read() as conn:
        held, last_error = await OutboxRepository().held_summary(conn, ALERT_KINDS)
        queued = await OutboxRepository().counts_of(conn, ALERT_KINDS, ("pending", "sending"))
        incident = await StateRepository().get(conn, INCIDENT)
    line = f"alerts: {held} held, {queued} queued"
    if incident is not None:
        line += f"; cannot reach the coordinators' chat since {incident}"
    elif held:
        line += f"; last reason: {last_error or 'no coordinators chat set (send /bind in the group)'}"
    return line


async def _audit_verify(settings: Settings, expect_head: str | None = None, *, copying: bool = False) -> int:
    from bot.runtime.audit import AuditLog, head_prefix
    from bot.runtime.clock import SystemClock
    from bot.security import Cipher
    from bot.security.key_guard import guard_key, refuse_retired
    from bot.services.reports.evidence import EvidenceStore, verify_evidence
    from bot.services.reports.seal import tampered_reports
    from storage.audit import AuditRepository
    from storage.database import Database
    from storage.state import StateRepository

    if expect_head is not None:
        try:
            head_prefix(expect_head)
        except ValueError as error:
            print(f"jarchy: --expect-head: {error}", file=sys.stderr)
            return EXIT_CONFIG
    refuse_retired(settings)  # before the engine is made: closing it would create an empty file
    db = Database.connect(settings.database_url)
    try:
        # A wrong key is a configuration error (exit 2), not a broken chain; and verify never makes a key.
        key = (await guard_key(settings, db, create=False, copying=copying)).key
    except KeyFileError:
        await db.close()
        raise
    try:
        verdict = await AuditLog(db, AuditRepository(), StateRepository(), key, SystemClock()).verify(
            expect_head
        )
        # The reports and their evidence are checked too: an edited category or a file moved to another
        # report is tampering with the record as much as an edited audit entry.
        tampered = await tampered_reports(db, Cipher(key))
        evidence = await verify_evidence(db, EvidenceStore(settings.data_dir / "evidence", key))
    finally:
        await db.close()
    problems = [
        *verdict.problems,
        *(
            f"report {code}: its category, region, kind or times were edited outside the bot"
            for code in tampered
        ),
        *(f"evidence {p.uid} of {p.code}: {p.problem}" for p in evidence.problems),
    ]
    for problem in problems:
        print(f"audit: {problem}", file=sys.stderr)
    if problems:
        print(
            f"audit: BROKEN — {len(problems)} problem(s) in {verdict.entries} entries, "
            f"{len(tampered)} report(s) and {len(evidence.problems)} evidence file(s)",
            file=sys.stderr,
        )
        return 1
    if verdict.anchor is not None and verdict.last is not None:
        anchor, after = verdict.anchor, verdict.last.id - verdict.anchor.id
        print(
            f"audit: the expected head is entry {anchor.id} ({anchor.at:%Y-%m-%d %H:%M} UTC); the chain "
            f"runs unbroken from it through {after} later entries to the seal"
        )
    print(f"audit: intact, {verdict.entries} entries, head {verdict.head}")
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from bot.domain.errors import Refused
    from bot.runtime.clock import SystemClock
    from bot.wiring import build_limiter, open_services

    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock), create_key=False)
    try:
        filters = [
            f"{name}={value}"
            for name in ("status", "category", "region", "since")
            if (value := getattr(args, name))
        ]
        try:
            query = services.desk.parse_filters(filters)
        except Refused as refusal:
            print(f"jarchy: bad filter {refusal.params.get('part', '')!r}", file=sys.stderr)
            return EXIT_CONFIG
        await services.exports.audit_cli(query, [args.format])
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            summary = await services.exports.write(query, {args.format: out})
    finally:
        await services.close()
    print(f"wrote {summary.rows} report(s) to {args.out}")
    return 0
