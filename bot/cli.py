"""The `jarchy` command: run, migrate, keygen, check."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.logs import configure_logging
from bot.security import KeyFileError, create_key_file
from bot.security.keys import read_key_file
from bot.settings import Settings, SettingsError

if TYPE_CHECKING:
    from storage.database import Database

EXIT_CONFIG = 2


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
        settings = Settings.from_env(require_token=args.command in ("run", "check"))
        if args.command == "health":
            return _health(settings)
    except SettingsError as error:
        print(f"jarchy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, [settings.bot_token.get_secret_value()])
    try:
        if args.command == "run":
            return _run(settings)
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "audit":
            return asyncio.run(_audit_verify(settings))
        if args.command == "export":
            return asyncio.run(_export(settings, args))
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
    sub.add_parser("migrate", help="apply database migrations and exit")
    keygen = sub.add_parser("keygen", help="write a new data key file (owner-only permissions)")
    keygen.add_argument(
        "--out", type=Path, help="where to write it (default: JARCHY_KEY_FILE or data/jarchy.key)"
    )
    keygen.add_argument(
        "--force", action="store_true", help="overwrite an existing key (its data becomes unreadable)"
    )
    sub.add_parser("check", help="validate settings, key and database; print what the bot would run with")
    sub.add_parser(
        "health", help="exit 0 if a running bot has signalled it is alive within the last 2 minutes"
    )
    audit = sub.add_parser("audit", help="check the audit log")
    audit.add_argument("action", choices=["verify"], help="verify: recompute the hash chain, report breaks")
    export = sub.add_parser("export", help="write reports as CSV or JSON (decrypted: keep the file safe)")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--out", type=Path, required=True, help="file to write (created with mode 600)")
    export.add_argument(
        "--since", help="only reports received since this date (YYYY-MM-DD) or for N days (7d)"
    )
    for name in ("status", "category", "region"):
        export.add_argument(f"--{name}", help=f"only reports with this {name} (as in /reports)")
    return parser


def _run(settings: Settings) -> int:
    from bot.runner import run_polling

    asyncio.run(run_polling(settings))
    return 0


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
    out: Path | None = args.out
    if out is None:
        settings = Settings.from_env(require_token=False)
        out = settings.resolved_key_file
    try:
        create_key_file(out, overwrite=args.force)
    except KeyFileError as error:
        print(f"jarchy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"wrote a new data key to {out} (mode 600). Keep a copy somewhere safe and apart from the database."
    )
    return 0


async def _check(settings: Settings) -> int:
    from storage import migrations
    from storage.database import Database

    for name, value in settings.describe():
        print(f"{name}={value}")
    problems: list[str] = []
    key_path = settings.resolved_key_file
    if key_path.exists():
        try:
            read_key_file(key_path)
            print("key: ok")
        except KeyFileError as error:
            problems.append(f"key: {error}")
    elif settings.key_file is not None:
        problems.append(f"key: {key_path} does not exist (create it with `jarchy keygen`)")
    else:
        print(f"key: none yet; one will be created at {key_path} on first start")
    db = Database.connect(settings.database_url)
    try:
        current, head = await migrations.current_revision(db), migrations.head_revision()
        state = "up to date" if current == head else f"at {current or 'empty'}, will migrate to {head}"
        print(f"database: reachable, {state}")
        if current == head:
            print(await _held_alerts(db))
    except Exception as error:
        problems.append(f"database: {type(error).__name__}: {error}")
    finally:
        await db.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


async def _held_alerts(db: Database) -> str:
    """Say how many alerts wait for the coordinators' chat, and why (read without the key)."""
    from bot.services.alert_watch import INCIDENT
    from bot.services.alerts import ALERT_KINDS
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


async def _audit_verify(settings: Settings) -> int:
    from bot.clock import SystemClock
    from bot.services.audit import AuditLog
    from bot.wiring import load_key
    from storage.audit import AuditRepository
    from storage.database import Database
    from storage.state import StateRepository

    db = Database.connect(settings.database_url)
    try:
        verdict = await AuditLog(
            db, AuditRepository(), StateRepository(), load_key(settings), SystemClock()
        ).verify()
    finally:
        await db.close()
    for problem in verdict.problems:
        print(f"audit: {problem}", file=sys.stderr)
    if not verdict.intact:
        print(
            f"audit: BROKEN — {len(verdict.problems)} problem(s) in {verdict.entries} entries",
            file=sys.stderr,
        )
        return 1
    print(f"audit: intact, {verdict.entries} entries, head {verdict.head}")
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from bot.services.roles import Refused
    from bot.wiring import build_limiter, open_services

    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
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
