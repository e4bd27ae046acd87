"""One instance against two on one PostgreSQL, in the same run: a broadcast under the cap, and updates/s.

1. broadcast: N campaign rows are queued in the outbox; one instance (`python -m bot run`), or two on the
   same database, deliver them to the fake Bot API, which answers 429 beyond C in any second. Three
   setups: one instance, two, and two whose elected sender is killed with SIGKILL once a third has gone
   (the other takes over). Figures per setup: achieved msg/s from the first message to the last (and ÷ C,
   over the whole run and without the longest silence, the takeover), that silence, lost, duplicates, 429s.
2. updates: K people send /start at once with limits off; the time from the first update queued to the
   last reply gives updates/s for one instance and for two (and their ratio).

Needs PostgreSQL: JARCHY_TEST_POSTGRES_URL (a role that may CREATE DATABASE), as for the tests.

    python bench/cluster.py -n 5000 --cap 30 --runs 3
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import figure, parser  # type: ignore[import-not-found]

FIRST_CHAT = 3_000_000
FIRST_PERSON = 4_000_000
STALL_S = 60.0  # longer than a takeover (the sender's lease)


async def prepare(root: Path, fake: Any, n: int) -> tuple[str, Any]:
    """Make a database (migrated), the key, and queue n campaign rows; return its URL and settings."""
    from bot.runtime.clock import SystemClock
    from bot.runtime.outbox import PRIORITY_BROADCAST, OutgoingMessage
    from bot.wiring import build_limiter, open_services
    from tests.support.database import create_postgres_database
    from tests.support.settings import make_settings

    url = await create_postgres_database()
    settings = make_settings(root, api_url=fake.url, database_url=url)
    services = await open_services(settings, SystemClock(), build_limiter(settings, SystemClock()))
    try:
        for start in range(0, n, 1000):
            async with services.db.write() as conn:
                await services.outbox.enqueue(
                    conn,
                    [
                        OutgoingMessage(
                            "sendMessage",
                            {"chat_id": FIRST_CHAT + i, "text": "campaign"},
                            kind="campaign",
                            recipient_user_id=FIRST_CHAT + i,
                            priority=PRIORITY_BROADCAST,
                        )
                        for i in range(start, min(n, start + 1000))
                    ],
                )
    finally:
        await services.close()
    return url, settings


async def lease_taken(url: str, name: str) -> None:
    from tests.support.database import read_rows

    while True:
        if await read_rows(url, "SELECT holder FROM leases WHERE name = :name", name=name):
            return
        await asyncio.sleep(0.1)


async def sender_of(url: str, bots: list[Any]) -> Any:
    from tests.support.database import read_rows

    while True:
        rows = await read_rows(url, "SELECT holder FROM leases WHERE name = 'sender'")
        if rows:
            for bot in bots:
                if (bot.data_dir / "instance-id").read_text(encoding="ascii").strip() == rows[0][0]:
                    return bot
        await asyncio.sleep(0.1)


async def broadcast_run(n: int, cap: float, instances: int, *, kill: bool = False) -> dict[str, float]:
    """Deliver n rows with 1 or 2 instances (with `kill`, the sender is killed a third of the way)."""
    from tests.fakebot import FakeBotApi
    from tests.support.bots import BotProcess
    from tests.support.database import drop_postgres_database
    from tests.support.settings import TEST_TOKEN

    with tempfile.TemporaryDirectory(prefix="jarchy-cluster-") as tmp:
        root = Path(tmp)
        async with FakeBotApi(TEST_TOKEN) as fake:
            url, _ = await prepare(root, fake, n)
            fake.set_rate_limit(cap)
            settings = {"database_url": url, "rate_global_per_s": str(cap), "outbox_lease_s": "60"}
            bots = [BotProcess(fake, root / f"i{k}", output=None, **settings) for k in range(instances)]
            for bot in bots:
                await bot.start()
            try:
                killed = False
                last_count, last_change = 0, time.monotonic()
                while True:
                    sent = fake.sent("sendMessage")
                    # Counted only when enough have come: the fake shares this loop, and a scan of every
                    # call each time would delay its answers (arrivals bunched into a 429).
                    if len(sent) >= n and len({c.params["chat_id"] for c in sent}) >= n:
                        break
                    if len(sent) != last_count:
                        last_count, last_change = len(sent), time.monotonic()
                    elif time.monotonic() - last_change > STALL_S:
                        break  # the rest are lost
                    if kill and not killed and len(sent) >= n // 3:
                        victim = await sender_of(url, bots)
                        await victim.kill()
                        killed = True
                    await asyncio.sleep(0.25)
                await asyncio.sleep(1.5)  # duplicates arriving late are counted too
            finally:
                for bot in bots:
                    if bot.process is not None and bot.process.returncode is None:
                        await bot.stop()
                await drop_postgres_database(url)
            sent = fake.sent("sendMessage")
            # The takeover shows as the longest silence between two sends.
            gap = max((b.at - a.at for a, b in itertools.pairwise(sent)), default=0.0)
            received = Counter(int(c.params["chat_id"]) for c in sent)
            span = sent[-1].at - sent[0].at if len(sent) > 1 else float("nan")
            rate = (len(sent) - 1) / span
            steady = (len(sent) - 1) / (span - gap) if span > gap else float("nan")
            return {
                "achieved_msg_per_s": rate,
                "ratio_to_cap": rate / cap,
                "ratio_to_cap_excl_takeover": steady / cap,
                "takeover_gap_s": gap,
                "lost": float(n - len(received)),
                "duplicates": float(sum(count - 1 for count in received.values())),
                "received_429": float(fake.received_429),
            }


async def updates_run(k: int, instances: int) -> float:
    """Return updates/s for k people sending /start at once, limits off."""
    from tests.fakebot import FakeBotApi
    from tests.support.bots import BotProcess
    from tests.support.database import drop_postgres_database
    from tests.support.settings import TEST_TOKEN

    with tempfile.TemporaryDirectory(prefix="jarchy-cluster-") as tmp:
        root = Path(tmp)
        async with FakeBotApi(TEST_TOKEN) as fake:
            url, _ = await prepare(root, fake, 0)
            settings = {
                "database_url": url,
                "rate_global_per_s": "0",
                "rate_private_per_s": "0",
                "rate_group_per_min": "0",
            }
            bots = [BotProcess(fake, root / f"i{k}", output=None, **settings) for k in range(instances)]
            for bot in bots:
                await bot.start()
            try:
                await lease_taken(url, "poller")
                await asyncio.sleep(1.0)  # both up (the second's start-up would compete otherwise)
                started = time.monotonic()
                for person in range(k):
                    fake.add_message(user_id=FIRST_PERSON + person, text="/start")
                await fake.wait_for("sendMessage", count=k, timeout=600)
                elapsed = time.monotonic() - started
            finally:
                for bot in bots:
                    if bot.process is not None and bot.process.returncode is None:
                        await bot.stop()
                await drop_postgres_database(url)
            return k / elapsed


async def write_cost(count: int = 300) -> list[float]:
    """Return the milliseconds of `count` one-row write transactions on PostgreSQL (the writers' lock
    included): what a limiter shared through the database would pay for every send, at the least."""
    from datetime import UTC, datetime, timedelta

    from storage.database import Database
    from storage.leases import LeaseRepository
    from tests.support.database import create_postgres_database, drop_postgres_database

    url = await create_postgres_database()
    db = Database.connect(url)
    leases = LeaseRepository()
    times: list[float] = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            now = datetime.now(UTC)
            async with db.write() as conn:
                await leases.acquire(conn, "limiter", "bench", now, now + timedelta(seconds=1))
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await db.close()
        await drop_postgres_database(url)
    return times


async def amain() -> None:
    args = parser(__doc__ or "", default_n=5000, default_cap=30).parse_args()
    import os

    if not os.environ.get("JARCHY_TEST_POSTGRES_URL"):
        sys.exit("bench/cluster.py needs JARCHY_TEST_POSTGRES_URL (see the README's tests section)")
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    k = max(100, args.n // 5)
    setups = {"one": (1, False), "two": (2, False), "two_killed": (2, True)}
    results: dict[str, list[dict[str, float]]] = {label: [] for label in setups}
    rates: dict[int, list[float]] = {1: [], 2: []}
    for run in range(args.runs):
        for label, (instances, kill) in setups.items():
            results[label].append(await broadcast_run(args.n, args.cap, instances, kill=kill))
            print(f"run {run + 1}, {label}: {results[label][-1]}", flush=True)
        for instances in (1, 2):
            rates[instances].append(await updates_run(k, instances))
    print(
        f"broadcast of {args.n} at cap {args.cap:g}: one instance, two, two with the sender killed"
        " (SIGKILL) a third of the way"
    )
    for label, figures in results.items():
        for name in figures[0]:
            print(figure(f"{name}_{label}", [r[name] for r in figures]))
    print(f"{k} people sending /start at once, limits off")
    print(figure("updates_per_s_one", rates[1], 1))
    print(figure("updates_per_s_two", rates[2], 1))
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    print(figure("updates_ratio_two_to_one", ratios))
    costs = await write_cost()
    quantiles = statistics.quantiles(costs, n=20)
    print("one PostgreSQL write transaction: the least a limiter shared through the database costs a send")
    print(f"pg_write_txn_ms_p50: {statistics.median(costs):.2f}")
    print(f"pg_write_txn_ms_p95: {quantiles[18]:.2f}")


if __name__ == "__main__":
    asyncio.run(amain())
