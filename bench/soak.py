"""A steady mixed load for minutes on end: what one update costs the bot, and whether its memory stays flat.

The bot runs as a real child process (`python -m bot run`) against the fake Bot API with Telegram's limits
off, so the figures are the bot's own. Updates go in at a steady --rate, as people with a second or more
between their taps would send them: /start and /help, guided reports (a third of them with a photo as
evidence) up to Submit, SOS with their confirmation, /cases and /follow of a case, /subscribe and
/settings, and junk (text the bot does not understand, unknown commands). Each step is one update; a step
is answered when the bot answers its button press, or sends or edits a message in that person's chat.

    python bench/soak.py                          # 10 minutes at 40 updates a second
    python bench/soak.py --minutes 2 --rate 40    # a short run

It prints `cpu_ms_per_update` (the bot process's user and system CPU from the first update to the last
answer, divided by the updates sent), `rss_slope_mb_per_min` (a least-squares line through the bot's
resident memory, sampled every 5 s over the second half of the run), `rss_start_mb` / `rss_end_mb`,
`wal_mb_max` (the largest WAL file seen), `step_p95_ms` (update queued to answered), `lost` (steps never
answered within 60 s, and submitted reports whose alert never reached the coordinators' chat) and
`duplicates` (a button press answered twice, a report alerted twice).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ROOT, figure  # type: ignore[import-not-found]

COORDINATORS = -100777
ADMIN = 2_999_999
FIRST_USER = 5_000_000
THINK_S = 1.0  # the least a person waits between two taps: below the flood guard's limits
ANSWER_TIMEOUT_S = 60.0
SAMPLE_S = 5.0
REPLIES = frozenset({"sendMessage", "editMessageText", "sendPhoto", "editMessageReplyMarkup"})
PHOTO = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2048

Step = Callable[["Session"], dict[str, Any] | None]


@dataclass
class Session:
    """One person's visit: a list of steps, each building the update to send from what the chat shows."""

    person: Any
    steps: deque[Step]
    kind: str
    ready_at: float = 0.0


@dataclass
class Watch:
    """What the load is waiting for, resolved by one scan of the fake's calls."""

    by_query: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    by_chat: dict[int, asyncio.Future[float]] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    alerts: Counter[int] = field(default_factory=Counter)
    pressed: dict[str, str] = field(default_factory=dict)  # query id -> the button's data
    scanned: int = 0

    def scan(self, calls: list[Any]) -> None:
        """Resolve every wait that a call since the last scan answers."""
        for call in calls[self.scanned :]:
            if not call.ok:
                continue
            if call.method == "answerCallbackQuery":
                query = str(call.params.get("callback_query_id"))
                self.answers[query] += 1
                waiting = self.by_query.pop(query, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(call.at)
                continue
            chat = call.params.get("chat_id")
            if chat == COORDINATORS and "reply_markup" in call.params:
                text = str(call.params.get("text", ""))
                if "reporter " in text:
                    self.alerts[int(text.split("reporter ")[1].split("<")[0].split()[0])] += 1
            if call.method in REPLIES and isinstance(chat, int):
                pending = self.by_chat.pop(chat, None)
                if pending is not None and not pending.done():
                    pending.set_result(call.at)
        self.scanned = len(calls)


def say(text: str) -> Step:
    """A step that sends a text message."""
    return lambda s: {"text": text}


def tap(action: str, arg: str | None = "") -> Step:
    """A step that presses the guided report's button `action:arg` (any arg for None) on the newest
    keyboard."""

    def build(session: Session) -> dict[str, Any] | None:
        message = session.person.keyboard_message()
        for data in session.person.buttons():
            parts = data.split(":")
            if parts[0] == "r" and parts[3] == action and (arg is None or parts[4] == arg):
                return {"data": data, "message_id": message["message_id"]}
        return None

    return build


def tap_ending(suffix: str) -> Step:
    """A step that presses the newest keyboard's button whose data ends with `suffix`."""

    def build(session: Session) -> dict[str, Any] | None:
        message = session.person.keyboard_message()
        for data in session.person.buttons():
            if data.endswith(suffix):
                return {"data": data, "message_id": message["message_id"]}
        return None

    return build


def photo(fake: Any) -> Step:
    """A step that sends a photo (evidence)."""
    return lambda s: {"photo_file_id": fake.add_file(PHOTO, file_name="photo.png")}


def report(person: Any, fake: Any, evidence: bool) -> list[Step]:
    """The guided report, from /report to Submit."""
    text = f"Detained at a peaceful picket, reporter {person.user_id}"
    middle = [photo(fake), tap("done")] if evidence else [tap("done")]
    return [
        say("/report"),
        tap("cat", "detention"),
        tap("when", "now"),
        tap("region", "bishkek"),
        tap("skip"),
        say(text),
        tap("skip"),
        *middle,
        tap("contact", "no"),
        tap("submit", None),
    ]


def plan(person: Any, fake: Any, rng: random.Random, returning: bool) -> tuple[str, list[Step]]:
    """Pick what this visit is, in the mix the bot sees on a busy day. Someone who came before does not
    report or call SOS again (an open SOS shows its follow-up screen instead, and a second alert with the
    same text would count as a duplicate)."""
    roll = rng.random()
    if returning and 0.20 <= roll < 0.55:
        roll = rng.choice((0.1, 0.6, 0.75, 0.9))
    if roll < 0.20:
        return "start", [say("/start"), say("/help")]
    if roll < 0.45:
        return "report", report(person, fake, evidence=rng.random() < 1 / 3)
    if roll < 0.55:
        return "sos", [say("/sos"), tap_ending(":go")]
    if roll < 0.70:
        return "follow", [say("/cases"), say("/follow 1"), say("/following")]
    if roll < 0.82:
        return "subscribe", [say("/subscribe"), say("/settings")]
    return "junk", [say("hello, is anyone there?"), say("/nonsense")]


def proc_cpu_s(pid: int) -> float:
    """Return a process's user + system CPU time in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    """Return a process's resident memory in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Return the least-squares slope of (seconds, MB) samples in MB per minute."""
    if len(samples) < 2:
        return float("nan")
    mean_t = statistics.fmean(t for t, _ in samples)
    mean_v = statistics.fmean(v for _, v in samples)
    num = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    den = sum((t - mean_t) ** 2 for t, _ in samples)
    return 60 * num / den if den else float("nan")


async def one_run(minutes: float, rate: float, seed: int) -> dict[str, float]:
    """Start the fake and the bot, keep the load steady for `minutes`, then measure."""
    from tests.fakebot import FakeBotApi
    from tests.support.bots import BotProcess
    from tests.support.people import Person

    rng = random.Random(seed)
    async with FakeBotApi() as fake:
        with tempfile.TemporaryDirectory() as data_dir:
            data = Path(data_dir) / "data"
            bot = BotProcess(
                fake,
                data,
                coordinator_chat_id=str(COORDINATORS),
                admin_ids=str(ADMIN),
                rate_global_per_s="0",
                rate_group_per_min="0",
                rate_private_per_s="0",
                reports_per_hour="1000",
            )
            await bot.start()
            try:
                await fake.wait_for("getUpdates", timeout=60)
                admin = Person(fake, ADMIN)
                await admin.say("/case_new Makhabat T. | Blogger charged for a post | Art. 327 | public", 60)
                assert bot.process is not None
                return await load(fake, bot.process.pid, data, minutes, rate, rng, Person)
            finally:
                await bot.stop()


async def load(
    fake: Any, pid: int, data: Path, minutes: float, rate: float, rng: random.Random, person: Any
) -> dict[str, float]:
    """Send the steady load and sample the bot; return the figures."""
    watch = Watch()
    loop = asyncio.get_running_loop()
    ids = itertools.count(FIRST_USER)
    idle: deque[tuple[float, Any]] = deque()  # people who came before and may come again, from when
    ready: deque[Session] = deque()
    latencies: list[float] = []
    lost = 0
    submitted: set[int] = set()
    sessions: Counter[str] = Counter()
    missing: Counter[str] = Counter()  # what went unanswered, to say where
    tasks: set[asyncio.Task[None]] = set()
    rss: list[tuple[float, float]] = []
    wal_max = 0.0
    wal = data / "jarchy.db-wal"

    async def run_step(session: Session, step: Step) -> None:
        nonlocal lost
        built = step(session)
        user = session.person.user_id
        if built is None:
            if os.environ.get("SOAK_DEBUG"):
                print(f"  no button for {session.kind}: {session.person.last_text()[:120]!r}")
            missing[f"{session.kind}:no button"] += 1
            lost += 1  # the button the person needs is not on their screen: the last answer went missing
            return
        waiting: asyncio.Future[float] = loop.create_future()
        sent_at = time.monotonic()
        if "data" in built:
            update = fake.add_callback_query(user_id=user, data=built["data"], message_id=built["message_id"])
            watch.by_query[str(update["callback_query"]["id"])] = waiting
            watch.pressed[str(update["callback_query"]["id"])] = built["data"]
        else:
            watch.by_chat[user] = waiting
            fake.add_message(user_id=user, **built)
        if session.kind == "report" and "data" in built and built["data"].split(":")[3] == "submit":
            submitted.add(user)
        try:
            answered_at = await asyncio.wait_for(asyncio.shield(waiting), ANSWER_TIMEOUT_S)
        except TimeoutError:
            missing[f"{session.kind}:{len(session.steps)} steps left"] += 1
            lost += 1
            return
        latencies.append(answered_at - sent_at)
        if os.environ.get("SOAK_DEBUG"):
            print(f"  {session.kind} {len(session.steps)} {answered_at - sent_at:.3f}")
        if session.steps:
            session.ready_at = time.monotonic() + THINK_S
            ready.append(session)
        else:
            # Not back before the last message of this visit (a second one of /settings) is in.
            idle.append((time.monotonic() + 5 * THINK_S, session.person))

    async def scanner() -> None:
        while True:
            watch.scan(fake.calls)
            await asyncio.sleep(0.01)

    def next_session() -> Session:
        now = time.monotonic()
        if ready and ready[0].ready_at <= now:
            return ready.popleft()
        # A returning person now and then (no chat of theirs is waiting), else someone new.
        returning = bool(idle) and idle[0][0] <= now and rng.random() < 0.3
        who = idle.popleft()[1] if returning else person(fake, next(ids))
        kind, steps = plan(who, fake, rng, returning)
        sessions[kind] += 1
        return Session(who, deque(steps), kind)

    scan = asyncio.create_task(scanner())
    duration = 60 * minutes
    interval = 1 / rate
    sent = 0
    started = time.monotonic()
    cpu_start = proc_cpu_s(pid)
    next_sample = started
    next_at = started
    try:
        while (now := time.monotonic()) - started < duration:
            if now >= next_sample:
                rss.append((now - started, proc_rss_mb(pid)))
                wal_max = max(wal_max, wal.stat().st_size / 2**20 if wal.exists() else 0.0)
                next_sample += SAMPLE_S
            session = next_session()
            step = session.steps.popleft()
            task = asyncio.create_task(run_step(session, step))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        sending_s = time.monotonic() - started
        await asyncio.gather(*tasks)
        # Alerts go through the outbox: give the last ones a moment.
        for _ in range(150):
            if submitted <= set(watch.alerts):
                break
            await asyncio.sleep(0.2)
        cpu = proc_cpu_s(pid) - cpu_start
        elapsed = time.monotonic() - started
    finally:
        scan.cancel()
        await asyncio.gather(scan, return_exceptions=True)
    watch.scan(fake.calls)
    lost += sum(1 for user in submitted if user not in watch.alerts)
    duplicates = sum(n - 1 for n in watch.answers.values() if n > 1)
    duplicates += sum(n - 1 for user, n in watch.alerts.items() if n > 1)
    second_half = [(t, v) for t, v in rss if t >= duration / 2]
    latencies.sort()
    print(f"  sessions: {dict(sessions)}; reports submitted: {len(submitted)}", flush=True)
    if missing:
        print(f"  unanswered: {dict(missing)}")
    twice = Counter(
        ":".join(watch.pressed.get(query, "?").split(":")[:1] + watch.pressed.get(query, "?").split(":")[3:4])
        for query, n in watch.answers.items()
        if n > 1
    )
    if twice:
        print(f"  button presses answered more than once, by button: {dict(twice)}")
    return {
        "updates": float(sent),
        "achieved_updates_per_s": sent / sending_s,
        "cpu_ms_per_update": 1000 * cpu / sent,
        "bot_cpu_share": cpu / elapsed,
        "rss_start_mb": rss[0][1],
        "rss_end_mb": rss[-1][1],
        "rss_slope_mb_per_min": slope_per_min(second_half),
        "wal_mb_max": wal_max,
        "step_p50_ms": 1000 * statistics.median(latencies),
        "step_p95_ms": 1000 * latencies[max(0, int(0.95 * len(latencies)) - 1)],
        "lost": float(lost),
        "duplicates": float(duplicates),
    }


def main() -> None:
    """Run and print one line per figure."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    cli.add_argument("--rate", type=float, default=40.0, help="updates a second (default 40)")
    cli.add_argument("--runs", type=int, default=1, help="repetitions (default 1)")
    cli.add_argument("--seed", type=int, default=14, help="seed of the traffic mix (default 14)")
    args = cli.parse_args()
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    os.chdir(ROOT)
    runs = []
    for index in range(args.runs):
        result = asyncio.run(one_run(args.minutes, args.rate, args.seed + index))
        runs.append(result)
        print(
            f"run {index + 1}: {result['cpu_ms_per_update']:.2f} ms CPU per update, "
            f"RSS slope {result['rss_slope_mb_per_min']:.2f} MB/min, "
            f"step p95 {result['step_p95_ms']:.0f} ms, "
            f"{result['lost']:.0f} lost",
            flush=True,
        )
    print(f"minutes: {args.minutes:g}")
    print(f"rate_updates_per_s: {args.rate:g}")
    for name, digits in (
        ("updates", 0),
        ("achieved_updates_per_s", 1),
        ("cpu_ms_per_update", 2),
        ("bot_cpu_share", 2),
        ("rss_start_mb", 1),
        ("rss_end_mb", 1),
        ("rss_slope_mb_per_min", 3),
        ("wal_mb_max", 2),
        ("step_p50_ms", 0),
        ("step_p95_ms", 0),
        ("lost", 0),
        ("duplicates", 0),
    ):
        print(figure(name, [run[name] for run in runs], digits))


if __name__ == "__main__":
    main()
