"""`jarchy bot status` and `jarchy bot switch`: the organisation's bots, seen and switched from the server.

The switch is asked for, not made, here: the request waits in the database and the running bot (or the
next one to start) makes it, with the "we moved" notices, the admins' summary and the audit entry, then
starts again on the new bot. So a switch from the command line is the same as one from /bots or an
automatic one, and it works whether the bot runs now or not.
"""

from __future__ import annotations

import argparse
import json
import sys

from bot.runtime.fleet import (
    ACTIVE_BOT,
    REFUSED_PREFIX,
    SWITCH_REQUEST,
    FleetBot,
    ask_username,
    fleet_bots,
)
from bot.settings import Settings
from storage.database import Database
from storage.state import StateRepository

EXIT_CONFIG = 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare `jarchy bot ...`."""
    bots = sub.add_parser("bot", help="the main bot and its backups: status, or switch to another")
    bots.add_argument("action", choices=["status", "switch"])
    bots.add_argument(
        "--to",
        metavar="BOT",
        default="backup",
        help='switch: the bot to use, as its @username, its id, "main" or "backup" (the first backup '
        "that answers; the default)",
    )


async def bot_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print the bots, or ask the bot to switch; return the exit code."""
    bots = fleet_bots(settings)
    answers = {bot.bot_id: await ask_username(settings, bot) for bot in bots}
    db = Database.connect(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms)
    state = StateRepository()
    try:
        async with db.read() as conn:
            raw = await state.get(conn, ACTIVE_BOT)
            refused = {b.bot_id: await state.get(conn, REFUSED_PREFIX + str(b.bot_id)) for b in bots}
            waiting = await state.get(conn, SWITCH_REQUEST)
        in_use = int(raw) if raw is not None and raw.isdigit() else bots[0].bot_id
        if args.action == "status":
            for bot in bots:
                answer = answers[bot.bot_id]
                heard = (
                    f"@{answer}" if isinstance(answer, str) else "refused" if answer is False else "no answer"
                )
                since = f"  refused since {refused[bot.bot_id]}" if refused[bot.bot_id] else ""
                mark = "*" if bot.bot_id == in_use else " "
                print(f"{mark} {bot.bot_id}  {'main  ' if bot.main else 'backup'}  {heard}{since}")
            if waiting:
                print(f"a switch is waiting for the bot to make it: {waiting}")
            if len(bots) == 1:
                print("no backup bot configured: set JARCHY_BACKUP_BOT_TOKENS (README: if the bot is banned)")
            return 0
        target = _choose(bots, answers, args.to, in_use)
        if target is None:
            print(
                f"jarchy: --to {args.to}: names no configured bot that answers getMe "
                "(see `jarchy bot status`)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        if target.bot_id == in_use:
            print(f"bot {target.bot_id} is in use already; nothing to do")
            return 0
        async with db.write() as conn:
            await state.put(conn, SWITCH_REQUEST, json.dumps({"to": target.bot_id, "by": "cli"}))
        print(
            f"asked for a switch to bot {target.bot_id}: the running bot makes it within seconds (or the "
            "next start does), tells everyone it can reach, and starts again on it"
        )
        return 0
    finally:
        await db.dispose()


def _choose(
    bots: tuple[FleetBot, ...], answers: dict[int, str | bool | None], wanted: str, in_use: int
) -> FleetBot | None:
    name = wanted.strip().lstrip("@").lower()
    answering = [b for b in bots if isinstance(answers[b.bot_id], str)]
    if name == "backup":
        return next((b for b in answering if not b.main and b.bot_id != in_use), None)
    if name == "main":
        return next((b for b in answering if b.main), None)
    for bot in answering:
        username = answers[bot.bot_id]
        if str(bot.bot_id) == name or (isinstance(username, str) and username.lower() == name):
            return bot
    return None
