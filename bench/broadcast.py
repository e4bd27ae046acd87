"""A campaign to N subscribers through the real bot and the fake Bot API under an overall cap of C msg/s.

Three measurements in one run:

1. jarchy: the subscribers and a ready campaign are written to a real database file; then the real bot
   (`python -m bot run`, a child process) enqueues the campaign with its Broadcaster and delivers it with its
   delivery worker to the fake Bot API, which answers 429 to any send beyond C in a sliding second. Figures:
   achieved msg/s between the first and the last campaign message (and ÷ C), 429s, lost, duplicates, the
   time the Broadcaster took to enqueue every row (first row to last, seen in the database), and the bot
   process's peak RSS.
2. plain python-telegram-bot: a child process with `Application` + `AIORateLimiter(C, 1, max_retries=3)`
   sends the same message (text, parse mode, buttons) to the same N chats, against a fresh fake server with
   the same cap. Same figures. It keeps `--ptb-in-flight` sends going (default 4, as many as the bot's
   worker): gathering all 20,000 sends at once (`--ptb-in-flight 0`) measured 0.16 of C, ~20 ms CPU and
   ~420 MB per run, and lost messages to timeouts, which says more about 20,000 waiting tasks than about PTB.
3. enqueue memory: `--enqueue-n` subscribers (and a tenth as many) are enqueued by `Broadcaster.run_pass()`
   in a fresh process (no bot, no sending); flat memory means both peaks are close.

CPU per message is the whole process's CPU time (start-up included) divided by the messages sent.

    python bench/broadcast.py -n 20000 --cap 300   # target >= 0.95 of C, no 429, none lost, < 150 MB
    python bench/broadcast.py -n 1800 --cap 30     # Telegram's free limit
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import ROOT, figure, parser, peak_rss_mb  # type: ignore[import-not-found]

TOKEN = "123456:TEST-TOKEN"  # noqa: S105 - the fake server's token
FIRST_CHAT = 1_000_000
AUTHOR = 5001
# No new campaign message for this long (with some still missing) ends a measurement: the rest are lost.
STALL_S = 20.0
# After the last expected message, wait this long for duplicates before counting.
SETTLE_S = 1.5
# "Enqueueing 100,000 must not raise peak RSS much": at most this much above the run with a tenth as many.
FLAT_RSS_MB = 10.0
TARGET_RATIO, TARGET_RSS_MB = 0.95, 150.0
PTB_IN_FLIGHT = 4  # as many as the bot's delivery worker (JARCHY_OUTBOX_CONCURRENCY default)


# ------------------------------------------------------------------------------------------ helpers


def proc_status_mb(pid: int, field: str) -> float:
    """Return a memory field (VmHWM, VmRSS) of a live process from /proc, in MB (NaN if unreadable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def proc_cpu_s(pid: int) -> float:
    """Return user + system CPU seconds a live process has used (NaN if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def settings_for(data_dir: Path) -> Any:
    """Settings of the benchmark's services (seeding and the enqueue child); the author is an admin."""
    from bot.settings import SecretStr, Settings

    return Settings(bot_token=SecretStr(TOKEN), data_dir=data_dir, admin_ids=frozenset({AUTHOR}))


def child_env() -> dict[str, str]:
    """Environment of this script's own child processes."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PTB_TIMEDELTA": "true"}


def last_json(out: bytes | str) -> dict[str, Any]:
    """Parse the last line a child printed."""
    text = out.decode() if isinstance(out, bytes) else out
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


async def seed(data_dir: Path, n: int) -> int:
    """Write n subscribers (chat ids FIRST_CHAT…) and a campaign scheduled for now; return its id."""
    from bot.runtime.clock import SystemClock
    from bot.wiring import build_limiter, open_services
    from tests.campaign_seed import ready_campaign, seed_subscribers

    settings = settings_for(data_dir)
    clock = SystemClock()
    logging.getLogger("bot.security").setLevel(logging.ERROR)  # "Created a new data key": expected here
    services = await open_services(settings, clock, build_limiter(settings, clock))
    try:
        await seed_subscribers(services, list(range(FIRST_CHAT, FIRST_CHAT + n)))
        return await ready_campaign(services, AUTHOR)
    finally:
        await services.close()


class Tally:
    """Campaign messages seen by a fake server, read incrementally from its call log."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.per_chat: Counter[int] = Counter()
        self.first_at = float("nan")
        self.last_at = float("nan")
        self.sample: dict[str, Any] | None = None
        self._scanned = 0

    def scan(self, calls: list[Any]) -> None:
        """Count the successful sendMessage calls to a subscriber that arrived since the last scan."""
        for call in calls[self._scanned :]:
            if call.status != 200 or call.method != "sendMessage":
                continue
            chat = call.params.get("chat_id")
            if not isinstance(chat, int) or not FIRST_CHAT <= chat < FIRST_CHAT + self.n:
                continue
            if not self.per_chat:
                self.first_at = call.at
                self.sample = call.params
            self.last_at = call.at
            self.per_chat[chat] += 1
        self._scanned = len(calls)

    @property
    def messages(self) -> int:
        """Return how many campaign messages arrived, duplicates included."""
        return sum(self.per_chat.values())

    def figures(self, cap: float, received_429: int) -> dict[str, float]:
        """Return achieved rate, ratio to the cap, 429s, lost and duplicates."""
        span = self.last_at - self.first_at
        achieved = (self.messages - 1) / span if self.messages > 1 and span > 0 else float("nan")
        return {
            "achieved_msg_per_s": achieved,
            "ratio_to_cap": achieved / cap if cap > 0 else float("nan"),
            "send_span_s": span,
            "received_429": received_429,
            "lost": self.n - len(self.per_chat),
            "duplicates": self.messages - len(self.per_chat),
        }


async def watch(fake: Any, tally: Tally, deadline_s: float, on_tick: Any = None) -> None:
    """Scan the fake's calls until every chat got its message (then settle) or sending stalls."""
    started = time.monotonic()
    last_progress, seen = started, 0
    while True:
        await asyncio.sleep(0.05)
        tally.scan(fake.calls)
        if on_tick is not None:
            await on_tick()
        now = time.monotonic()
        if tally.messages != seen:
            seen, last_progress = tally.messages, now
        if len(tally.per_chat) >= tally.n:
            break
        stalled = tally.messages > 0 and now - last_progress > STALL_S
        if stalled or now - started > deadline_s:
            break
    await asyncio.sleep(SETTLE_S)
    tally.scan(fake.calls)


# --------------------------------------------------------------------------------- 1. jarchy (the bot)


async def jarchy_run(template: Path, n: int, cap: float, bot_settings: dict[str, str]) -> dict[str, Any]:
    """Copy the seeded database, run the real bot against a capped fake server, measure."""
    from tests.fakebot import FakeBotApi
    from tests.support.bots import BotProcess

    async with FakeBotApi(TOKEN) as fake:
        if cap > 0:
            fake.set_rate_limit(cap)  # strict: any excess is answered with 429
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            shutil.copytree(template, data_dir)
            log_file = Path(tmp) / "bot.log"
            bot = BotProcess(
                fake,
                data_dir,
                output=log_file,
                admin_ids=str(AUTHOR),
                rate_global_per_s=f"{cap:g}",
                rate_private_per_s="1",
                **bot_settings,
            )
            db = sqlite3.connect(f"file:{data_dir / 'jarchy.db'}?mode=ro", uri=True, check_same_thread=False)
            enqueue = {"first": float("nan"), "all": float("nan")}

            def count_rows() -> int:
                query = "SELECT count(*) FROM outbox WHERE kind = 'campaign'"
                return int(db.execute(query).fetchone()[0])

            async def poll_enqueue() -> None:
                if enqueue["all"] == enqueue["all"]:  # not NaN: done
                    return
                rows = await asyncio.to_thread(count_rows)
                now = time.monotonic()
                if rows and enqueue["first"] != enqueue["first"]:
                    enqueue["first"] = now
                if rows >= n:
                    enqueue["all"] = now

            tally = Tally(n)
            started = time.monotonic()
            await bot.start()
            assert bot.process is not None
            pid = bot.process.pid
            try:
                await watch(fake, tally, deadline_s=60 + 3 * n / (cap or 300), on_tick=poll_enqueue)
                peak_mb = proc_status_mb(pid, "VmHWM")
                cpu_s = proc_cpu_s(pid)
            finally:
                await bot.stop()
                db.close()
            log_tail = log_file.read_text(errors="replace").splitlines()[-8:] if log_file.exists() else []
        figures = tally.figures(cap, fake.received_429)
    # The fake's clock (call.at) and ours are both time.monotonic().
    return {
        **figures,
        "enqueue_s": enqueue["all"] - enqueue["first"],
        "start_to_enqueued_s": enqueue["all"] - started,
        "start_to_first_send_s": tally.first_at - started,
        "peak_rss_mb": peak_mb,
        "cpu_ms_per_msg": 1000 * cpu_s / max(1, tally.messages),
        "sample": tally.sample,
        "log_tail": log_tail,
    }


# ------------------------------------------------------------------------ 2. plain python-telegram-bot


async def ptb_side(
    api_url: str, n: int, cap: float, in_flight: int, message: dict[str, Any]
) -> dict[str, Any]:
    """In a child process: send the message to n chats with PTB's Application and AIORateLimiter.

    `in_flight` sends at a time (a pool of that many tasks taking the next chat as each send ends), or all
    n gathered at once when 0."""
    import resource

    from telegram import InlineKeyboardMarkup
    from telegram.ext import AIORateLimiter, ApplicationBuilder

    # A send given up after max_retries is counted as lost by the server side; its traceback is noise here.
    logging.getLogger("telegram").setLevel(logging.CRITICAL)
    builder = ApplicationBuilder().token(TOKEN).base_url(f"{api_url}/bot")
    app: Any
    if cap > 0:
        limiter = AIORateLimiter(overall_max_rate=cap, overall_time_period=1, max_retries=3)
        app = builder.rate_limiter(limiter).build()
    else:
        app = builder.build()
    await app.initialize()
    markup = message.get("reply_markup")
    extra: dict[str, Any] = {}
    if isinstance(markup, dict):
        extra["reply_markup"] = InlineKeyboardMarkup.de_json(markup, app.bot)
    if message.get("parse_mode"):
        extra["parse_mode"] = message["parse_mode"]
    text = str(message.get("text") or "Write for Rights")
    rss_before = peak_rss_mb()
    errors: Counter[str] = Counter()
    chats = iter(range(FIRST_CHAT, FIRST_CHAT + n))

    async def sender() -> None:
        for chat in chats:
            try:
                await app.bot.send_message(chat, text, **extra)
            except Exception as error:  # counted: a message PTB gave up on is lost
                errors[type(error).__name__] += 1

    try:
        started = time.perf_counter()
        if in_flight > 0:
            await asyncio.gather(*(sender() for _ in range(min(in_flight, n))))
        else:
            results = await asyncio.gather(
                *(app.bot.send_message(chat, text, **extra) for chat in chats), return_exceptions=True
            )
            errors.update(type(r).__name__ for r in results if isinstance(r, BaseException))
        elapsed = time.perf_counter() - started
    finally:
        await app.shutdown()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "elapsed_s": elapsed,
        "errors": dict(errors),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_sending_mb": rss_before,
        "cpu_ms_per_msg": 1000 * (usage.ru_utime + usage.ru_stime) / max(1, n),
    }


async def ptb_run(n: int, cap: float, in_flight: int, message: dict[str, Any]) -> dict[str, Any]:
    """Start a fresh capped fake server, run the PTB loop in a child process, count what arrived."""
    from tests.fakebot import FakeBotApi

    async with FakeBotApi(TOKEN) as fake:
        if cap > 0:
            fake.set_rate_limit(cap)
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--ptb-child", fake.url, str(n), str(cap), str(in_flight),
            json.dumps(message),
            stdout=subprocess.PIPE, cwd=ROOT, env=child_env(),
        )  # fmt: skip
        tally = Tally(n)
        communicate = asyncio.create_task(child.communicate())
        while not communicate.done():
            await asyncio.sleep(0.2)
            tally.scan(fake.calls)
        out, _ = await communicate
        tally.scan(fake.calls)
        received_429 = fake.received_429
    side = last_json(out)
    return {**tally.figures(cap, received_429), **side}


# ----------------------------------------------------------------------------------- 3. enqueue memory


async def enqueue_side(data_dir: Path, campaign_id: int) -> dict[str, float]:
    """In a fresh process: run the Broadcaster's passes until the campaign is fully enqueued."""
    from bot.runtime.clock import SystemClock
    from bot.wiring import build_limiter, open_services
    from storage.campaigns import CampaignRepository

    settings = settings_for(data_dir)
    clock = SystemClock()
    services = await open_services(settings, clock, build_limiter(settings, clock))
    repo = CampaignRepository()
    try:
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        enqueued = passes = 0
        while True:
            result = await services.broadcaster.run_pass()
            enqueued += result.enqueued
            passes += 1
            async with services.db.read() as conn:
                status = (await repo.get(conn, campaign_id)).status
            if status not in ("scheduled", "sending"):
                break
        elapsed = time.perf_counter() - started
    finally:
        await services.close()
    return {
        "enqueue_s": elapsed,
        "enqueued": enqueued,
        "passes": passes,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def enqueue_run(template: Path, campaign_id: int) -> dict[str, float]:
    """Copy the seeded database and enqueue its campaign in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(template, data_dir)
        child = subprocess.run(  # noqa: S603 - this very script, with arguments it made
            [sys.executable, __file__, "--enqueue-child", str(data_dir), str(campaign_id)],
            capture_output=True, text=True, check=True, cwd=ROOT, env=child_env(),
        )  # fmt: skip
    return last_json(child.stdout)


# --------------------------------------------------------------------------------------------- main


def print_figures(prefix: str, runs: list[dict[str, Any]], names: tuple[tuple[str, int], ...]) -> None:
    """Print `prefix_name: median (min, max)` for each figure."""
    for name, digits in names:
        values = [float(run[name]) for run in runs]
        if any(v != v for v in values):  # NaN: not applicable (e.g. no cap)
            continue
        print(figure(f"{prefix}_{name}", values, digits))


def verdict(
    cap: float,
    jarchy: list[dict[str, Any]],
    enqueue_big: list[dict[str, Any]],
    enqueue_small: list[dict[str, Any]],
    ptb: list[dict[str, Any]],
) -> str:
    """Say in one line whether jarchy met the issue's targets (and where the PTB baseline stood)."""
    misses = []
    baseline = ""
    if ptb:
        baseline = (
            f" | PTB baseline: {statistics.median(r['ratio_to_cap'] for r in ptb):.3f} of C, "
            f"{statistics.median(r['received_429'] for r in ptb):.0f} x 429, "
            f"{statistics.median(r['lost'] for r in ptb):.0f} lost (medians)"
        )
    ratio = statistics.median(r["ratio_to_cap"] for r in jarchy) if cap > 0 else float("nan")
    if cap > 0 and not ratio >= TARGET_RATIO:
        misses.append(f"ratio {ratio:.3f} < {TARGET_RATIO}")
    for name in ("lost", "received_429", "duplicates"):
        worst = max(r[name] for r in jarchy)
        if worst:
            misses.append(f"{name} up to {worst:.0f}")
    rss = max(r["peak_rss_mb"] for r in jarchy)
    if not rss < TARGET_RSS_MB:
        misses.append(f"peak RSS {rss:.1f} MB >= {TARGET_RSS_MB:g}")
    if enqueue_big and enqueue_small:
        growth = statistics.median(r["peak_rss_mb"] for r in enqueue_big) - statistics.median(
            r["peak_rss_mb"] for r in enqueue_small
        )
        if growth > FLAT_RSS_MB:
            misses.append(f"enqueue peak RSS grows {growth:.1f} MB over a tenth as many (> {FLAT_RSS_MB:g})")
    lowest = min(r["ratio_to_cap"] for r in jarchy) if cap > 0 else float("nan")
    met = (
        f"ratio >= {TARGET_RATIO} of C (median {ratio:.3f}, min {lowest:.3f})"
        if cap > 0
        else "no cap (ratio n/a)"
    )
    if misses:
        return "verdict: jarchy MISSED targets: " + "; ".join(misses) + baseline
    flat = ", flat enqueue memory" if enqueue_big else ""
    return (
        f"verdict: jarchy met targets: {met}, 0 lost, 0 x 429, 0 duplicates, peak RSS {rss:.1f} MB{flat}"
        + baseline
    )


def main() -> None:
    """Run the three measurements and print one line per figure."""
    if len(sys.argv) > 1 and sys.argv[1] == "--ptb-child":
        api_url, n, cap, in_flight = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(asyncio.run(ptb_side(api_url, n, cap, in_flight, json.loads(sys.argv[6])))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--enqueue-child":
        print(json.dumps(asyncio.run(enqueue_side(Path(sys.argv[2]), int(sys.argv[3])))))
        return
    cli = parser(__doc__.splitlines()[0], default_n=20_000, default_cap=300)
    cli.add_argument(
        "--enqueue-n",
        type=int,
        default=100_000,
        help="subscribers for the enqueue-memory check, also run with a tenth (0 = skip; default 100000)",
    )
    cli.add_argument(
        "--bot-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a JARCHY_ setting for the bot, e.g. outbox_concurrency=8 (repeatable; default: the bot's own)",
    )
    cli.add_argument("--skip-ptb", action="store_true", help="do not run the python-telegram-bot baseline")
    cli.add_argument(
        "--ptb-in-flight",
        type=int,
        default=PTB_IN_FLIGHT,
        help=f"sends the PTB baseline keeps in flight, 0 = gather all N at once (default {PTB_IN_FLIGHT})",
    )
    args = cli.parse_args()
    bot_settings = dict(item.split("=", 1) for item in args.bot_setting)
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    os.chdir(ROOT)
    wall = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "seeded"
        seeding = time.perf_counter()
        asyncio.run(seed(template, args.n))
        print(f"seeded {args.n} subscribers in {time.perf_counter() - seeding:.1f} s", flush=True)
        jarchy: list[dict[str, Any]] = []
        ptb: list[dict[str, Any]] = []
        for index in range(args.runs):
            result = asyncio.run(jarchy_run(template, args.n, args.cap, bot_settings))
            jarchy.append(result)
            print(
                f"run {index + 1} jarchy: {result['achieved_msg_per_s']:.1f} msg/s "
                f"({result['ratio_to_cap']:.3f} of C), {result['received_429']:.0f} x 429, "
                f"lost {result['lost']:.0f}, duplicates {result['duplicates']:.0f}, "
                f"enqueue {result['enqueue_s']:.2f} s, peak RSS {result['peak_rss_mb']:.1f} MB, "
                f"{result['cpu_ms_per_msg']:.2f} ms CPU/msg",
                flush=True,
            )
            if result["lost"] or result["received_429"] or result["duplicates"]:
                for line in result["log_tail"]:
                    print(f"    bot log: {line}", flush=True)
            if args.skip_ptb:
                continue
            message = result["sample"] or {"text": "Write for Rights"}
            message = {key: message[key] for key in ("text", "parse_mode", "reply_markup") if key in message}
            result = asyncio.run(ptb_run(args.n, args.cap, args.ptb_in_flight, message))
            ptb.append(result)
            print(
                f"run {index + 1} ptb:    {result['achieved_msg_per_s']:.1f} msg/s "
                f"({result['ratio_to_cap']:.3f} of C), {result['received_429']:.0f} x 429, "
                f"lost {result['lost']:.0f}, duplicates {result['duplicates']:.0f}, "
                f"peak RSS {result['peak_rss_mb']:.1f} MB, {result['cpu_ms_per_msg']:.2f} ms CPU/msg, "
                f"errors {result['errors'] or 'none'}",
                flush=True,
            )

    big: list[dict[str, Any]] = []
    small: list[dict[str, Any]] = []
    if args.enqueue_n > 0:
        with tempfile.TemporaryDirectory() as tmp:
            for size, found in ((args.enqueue_n // 10, small), (args.enqueue_n, big)):
                template = Path(tmp) / f"seeded-{size}"
                campaign_id = asyncio.run(seed(template, size))
                for index in range(args.runs):
                    result = enqueue_run(template, campaign_id)
                    found.append(result)
                    print(
                        f"run {index + 1} enqueue {size}: {result['enqueue_s']:.2f} s, "
                        f"{result['enqueued']:.0f} rows in {result['passes']:.0f} passes, peak RSS "
                        f"{result['peak_rss_mb']:.1f} MB ({result['rss_before_mb']:.1f} MB before)",
                        flush=True,
                    )

    print(f"subscribers: {args.n}")
    print(f"cap_msg_per_s: {args.cap:g}")
    print(f"bot_settings: {', '.join(f'{k}={v}' for k, v in bot_settings.items()) or 'defaults'}")
    names = (
        ("ratio_to_cap", 3),
        ("achieved_msg_per_s", 1),
        ("received_429", 0),
        ("lost", 0),
        ("duplicates", 0),
        ("peak_rss_mb", 1),
        ("cpu_ms_per_msg", 2),
    )
    timings = (("enqueue_s", 2), ("start_to_enqueued_s", 2), ("start_to_first_send_s", 2))
    print_figures("jarchy", jarchy, (*names, *timings))
    if ptb:
        print_figures("ptb", ptb, names)
    if big and small:
        label_big, label_small = f"{args.enqueue_n // 1000}k", f"{args.enqueue_n // 10000}k"
        if args.enqueue_n % 10000:
            label_big, label_small = str(args.enqueue_n), str(args.enqueue_n // 10)
        for label, found in ((label_big, big), (label_small, small)):
            print(figure(f"enqueue_{label}_s", [r["enqueue_s"] for r in found], 2))
            print(figure(f"enqueue_{label}_peak_rss_mb", [r["peak_rss_mb"] for r in found], 1))
        # The same child's peak after opening the services, before the first pass: the floor.
        print(figure("enqueue_services_open_rss_mb", [r["rss_before_mb"] for r in big + small], 1))
    print(f"wall_s: {time.monotonic() - wall:.0f}")
    print(verdict(args.cap, jarchy, big, small, ptb))


if __name__ == "__main__":
    main()
