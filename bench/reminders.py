"""One reminder pass over a large database: 10,000 hearings, 100,000 follows, 10,000 reminders due at once.

The database is built first; then a fresh process (the bot's side, real services, real SQLite file) runs
one materialisation pass, so its peak RSS is the pass's own.

    python bench/reminders.py          # -n 10000 hearings, 10 followers per hearing's case
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT, figure, parser, peak_rss_mb  # type: ignore[import-not-found]

FOLLOWERS_PER_CASE = 100
HEARINGS_PER_CASE = 10
DUE_AT_ONCE = 10_000


def settings_for(data_dir: str) -> object:
    """Settings for the benchmark's data directory."""
    from bot.settings import SecretStr, Settings

    return Settings(bot_token=SecretStr("123456:TEST-TOKEN"), data_dir=Path(data_dir), reminder_interval_s=30)


async def build(data_dir: str, hearings: int) -> datetime:
    """Fill the database; return when the due hearings start."""
    from sqlalchemy import insert

    from bot.runtime.clock import SystemClock
    from bot.services.cases.hearings import STATE_KEY
    from bot.wiring import build_limiter, open_services
    from storage.schema import bot_state, cases, follows
    from storage.schema import hearings as hearings_table

    settings = settings_for(data_dir)
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))  # type: ignore[arg-type]
    now = clock.now()
    due_start = now + timedelta(hours=2, seconds=1)  # the 2-hour reminder of these falls due at once
    case_count = hearings // HEARINGS_PER_CASE
    due_cases = DUE_AT_ONCE // FOLLOWERS_PER_CASE
    try:
        async with services.db.write() as conn:
            await conn.execute(
                insert(cases),
                [
                    {"id": c, "title": f"Case {c}", "description": "d", "charges": "c", "public": True,
                     "status": "open", "created_at": now, "updated_at": now}
                    for c in range(1, case_count + 1)
                ],
            )  # fmt: skip
            rows = []
            for c in range(1, case_count + 1):
                for h in range(HEARINGS_PER_CASE):
                    # One hearing of each of the first cases starts at due_start; the rest spread over months.
                    at = (
                        due_start
                        if (h == 0 and c <= due_cases)
                        else now + timedelta(days=3 + h * 9, minutes=c)
                    )
                    rows.append(
                        {"case_id": c, "starts_at": at, "court": "Court", "address": "Address",
                         "status": "scheduled", "sequence": 0, "created_at": now, "updated_at": now}
                    )  # fmt: skip
            await conn.execute(insert(hearings_table), rows)
            follows_rows = []
            for c in range(1, case_count + 1):
                for f in range(FOLLOWERS_PER_CASE):
                    person = 10_000_000 + c * 1000 + f
                    pseudonym = services.pseudonyms.of_user(person)
                    chat = services.cipher.encrypt_text(str(person), binding=f"follows.chat:{c}:{pseudonym}")
                    follows_rows.append(
                        {"case_id": c, "follower": pseudonym, "chat": chat, "created_at": now}
                    )
            await conn.execute(insert(follows), follows_rows)
            await conn.execute(
                insert(bot_state).values(key=STATE_KEY, value=(now - timedelta(seconds=1)).isoformat())
            )
    finally:
        await services.close()
    return due_start - timedelta(hours=2)


async def one_pass(data_dir: str, due: datetime) -> dict[str, float]:
    """Run one pass in this (fresh) process and time it."""
    from sqlalchemy import update

    from bot.runtime.clock import SystemClock
    from bot.wiring import build_limiter, open_services
    from storage.schema import hearings as hearings_table

    settings = settings_for(data_dir)
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))  # type: ignore[arg-type]
    try:
        # Make the reminders fall due right now, as the pass starts (building the data took a while).
        due_now = clock.now()
        async with services.db.write() as conn:
            await conn.execute(
                update(hearings_table)
                .where(hearings_table.c.starts_at == due + timedelta(hours=2))
                .values(starts_at=due_now + timedelta(hours=2))
            )
        due = due_now
        before_mb = peak_rss_mb()
        started = time.perf_counter()
        result = await services.hearings.materialise()
        pass_s = time.perf_counter() - started
        committed = datetime.now(UTC)
    finally:
        await services.close()
    return {
        "pass_s": pass_s,
        "queued": result.queued,
        # Negative: the reminders were in the outbox before they were due (the pass looks one interval ahead).
        "due_to_outbox_s": (committed - due).total_seconds(),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_pass_mb": before_mb,
    }


def main() -> None:
    """Build, measure in a child, print one line per figure."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        data_dir, due = sys.argv[2], datetime.fromisoformat(sys.argv[3])
        print(json.dumps(asyncio.run(one_pass(data_dir, due))))
        return
    cli = parser(__doc__.splitlines()[0], default_n=10_000, default_cap=0)
    args = cli.parse_args()
    runs = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory() as data_dir:
            due = asyncio.run(build(data_dir, args.n))
            child = subprocess.run(  # noqa: S603 - this very script, with arguments it made
                [sys.executable, __file__, "--child", data_dir, due.isoformat()],
                capture_output=True, text=True, check=True, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            result = json.loads(child.stdout.strip().splitlines()[-1])
        runs.append(result)
        print(
            f"run {index + 1}: pass {result['pass_s']:.2f} s, {result['queued']:.0f} reminders queued",
            flush=True,
        )
    print(f"hearings: {args.n}")
    print(f"follows: {args.n // HEARINGS_PER_CASE * FOLLOWERS_PER_CASE}")
    print("interval_s: 30")
    for name, digits in (
        ("queued", 0),
        ("pass_s", 2),
        ("due_to_outbox_s", 2),
        ("rss_before_pass_mb", 1),
        ("peak_rss_mb", 1),
    ):
        print(figure(name, [run[name] for run in runs], digits))


if __name__ == "__main__":
    main()
