"""How fast the real delivery worker drains the outbox into the fake Bot API, and what it loses.

The fake server runs in this process; the bot's side (database, outbox, delivery worker) runs in a child
process, as in production, so the two do not share one event loop and the child's peak RSS is the bot's.

    python bench/outbox_throughput.py --cap 30          # Telegram's free limit: target >= 0.95 of the cap
    python bench/outbox_throughput.py --cap 0 -n 20000  # the ceiling of one process: target >= 1,000 msg/s
    python bench/outbox_throughput.py --cap 0 --backup  # after a switch: every row routed per person
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import ROOT, figure, parser, peak_rss_mb  # type: ignore[import-not-found]

FIRST_CHAT = 1_000_000


MAIN_TOKEN = "123456:TEST-TOKEN"  # noqa: S105 - the fake server's tokens
BACKUP_TOKEN = "654321:BACKUP-TOKEN-bench"  # noqa: S105


async def bot_side(
    api_url: str, data_dir: str, n: int, cap: float, concurrency: int, backup: bool
) -> dict[str, float]:
    """Enqueue n messages, one per recipient, and deliver them all with the real worker (`backup`: with
    a backup bot in use, every recipient recorded as having started it, so each batch is routed)."""
    from bot.runtime.clock import SystemClock
    from bot.runtime.fleet import running_settings
    from bot.runtime.outbox import PRIORITY_BROADCAST, OutgoingMessage
    from bot.settings import SecretStr, Settings
    from bot.wiring import build_limiter, open_services

    settings = Settings(
        bot_token=SecretStr(MAIN_TOKEN),
        # The key beside the data dir, inside the run's temporary directory (never the user's own).
        data_dir=Path(data_dir) / "data",
        key_file=Path(data_dir) / "keys" / "jarchy.key",
        api_url=api_url,
        rate_global_per_s=cap,
        outbox_concurrency=concurrency,
        backup_bot_tokens=(SecretStr(BACKUP_TOKEN),) if backup else (),
    )
    if backup:
        settings = running_settings(settings, int(BACKUP_TOKEN.split(":")[0]))
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        if backup:
            for i in range(n):
                await services.backups.started(services.fleet.active.bot_id, FIRST_CHAT + i, "en")
        started = time.perf_counter()
        batch = 1000
        for first in range(0, n, batch):
            messages = [
                OutgoingMessage(
                    "sendMessage",
                    {"chat_id": FIRST_CHAT + i, "text": f"Write for Rights: message {i}"},
                    kind="campaign",
                    recipient_user_id=FIRST_CHAT + i,
                    priority=PRIORITY_BROADCAST,
                )
                for i in range(first, min(n, first + batch))
            ]
            async with services.db.write() as conn:
                await services.outbox.enqueue(conn, messages)
        enqueue_s = time.perf_counter() - started
        worker = asyncio.create_task(services.delivery.run())
        started = time.perf_counter()
        while True:
            await asyncio.sleep(0.2)
            async with services.db.read() as conn:
                counts = await services.outbox_repo.counts(conn)
            if counts.get("pending", 0) + counts.get("sending", 0) == 0:
                break
        drain_s = time.perf_counter() - started
        services.delivery.stop()
        await worker
        return {
            "enqueue_s": enqueue_s,
            "drain_s": drain_s,
            "sent_rows": counts.get("sent", 0),
            "peak_rss_mb": peak_rss_mb(),
        }
    finally:
        await services.close()


async def one_run(n: int, cap: float, concurrency: int, backup: bool) -> dict[str, float]:
    """Start the fake server, run the bot side in a child process, count what arrived."""
    from tests.fakebot import FakeBotApi

    async with FakeBotApi(MAIN_TOKEN) as fake:
        # The backup answers at the same address, as Telegram serves every bot's token at one.
        receiver = FakeBotApi(BACKUP_TOKEN, bot_id=654321, bot_username="bench_backup_bot")
        fake.serve_also(receiver)
        if not backup:
            receiver = fake
        if cap > 0:
            receiver.set_rate_limit(cap)  # strict: any excess is answered with 429
        with tempfile.TemporaryDirectory() as data_dir:
            child = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--child", fake.url, data_dir, str(n), str(cap),
                str(concurrency), str(int(backup)),
                stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            out, _ = await child.communicate()
        bot = json.loads(out.decode().strip().splitlines()[-1])
        sends = receiver.sent("sendMessage")
        fake_429 = receiver.received_429
        per_chat = Counter(int(call.params["chat_id"]) for call in sends)
        arrivals = [call.at for call in sends]
    span = max(arrivals) - min(arrivals) if len(arrivals) > 1 else float("nan")
    achieved = (len(arrivals) - 1) / span if span > 0 else float("nan")
    return {
        **bot,
        "achieved_msg_per_s": achieved,
        "ratio_to_cap": achieved / cap if cap > 0 else float("nan"),
        "received_429": fake_429,
        "lost": n - len(per_chat),
        "duplicates": sum(count - 1 for count in per_chat.values()),
    }


def main() -> None:
    """Run the benchmark and print one line per figure."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        api_url, data_dir, n, cap, concurrency, backup = (
            sys.argv[2],
            sys.argv[3],
            int(sys.argv[4]),
            float(sys.argv[5]),
            int(sys.argv[6]),
            sys.argv[7] == "1",
        )
        print(json.dumps(asyncio.run(bot_side(api_url, data_dir, n, cap, concurrency, backup))))
        return
    cli = parser(__doc__.splitlines()[0], default_n=5000, default_cap=30)
    cli.add_argument("--concurrency", type=int, default=4, help="sends in flight (JARCHY_OUTBOX_CONCURRENCY)")
    cli.add_argument(
        "--backup", action="store_true", help="a backup bot in use: every batch routed per person (#15)"
    )
    args = cli.parse_args()
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    runs = []
    for index in range(args.runs):
        result = asyncio.run(one_run(args.n, args.cap, args.concurrency, args.backup))
        runs.append(result)
        print(
            f"run {index + 1}: {result['achieved_msg_per_s']:.1f} msg/s, {result['received_429']:.0f} x 429, "
            f"lost {result['lost']:.0f}, duplicates {result['duplicates']:.0f}",
            flush=True,
        )
    print(f"messages: {args.n}")
    print(f"cap_msg_per_s: {args.cap:g}")
    print(f"backup_in_use: {args.backup}")
    for name, digits in (
        ("achieved_msg_per_s", 1),
        ("ratio_to_cap", 3),
        ("received_429", 0),
        ("lost", 0),
        ("duplicates", 0),
        ("enqueue_s", 2),
        ("drain_s", 2),
        ("peak_rss_mb", 1),
    ):
        values = [run[name] for run in runs]
        if name == "ratio_to_cap" and args.cap <= 0:
            continue
        print(figure(name, values, digits))


if __name__ == "__main__":
    main()
