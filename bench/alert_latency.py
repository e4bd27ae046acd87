"""Time from a reporter's Submit reaching Telegram to the alert reaching the coordinators' chat.

R reporters walk the guided report concurrently through the fake Bot API (the bot runs as a real child
process, `python -m bot run`), then all press Submit at once. Latency is measured on the fake server's
clock: the moment the Submit press is queued for the bot, and the moment the alert arrives.

    python bench/alert_latency.py                # R = 200, no overall cap, no per-group limit
    python bench/alert_latency.py --cap 30 -n 20 # Telegram's free overall limit
    python bench/alert_latency.py --real-limits  # the worst day: Telegram's real limits, SOS among them

Profiling the presses: BENCH_TIMELINE=1 prints when (ms after the first press; min, p10, p50, p90, max)
each Bot API method was called and the bot's CPU seconds over the presses; BENCH_SPY=FILE samples the bot
with py-spy.

--real-limits runs the crisis: the fake enforces Telegram's limits (30 a second overall, 1 a second per
private chat, 20 a minute per group, edits counted) and answers 429 to any excess; the bot runs with the
same settings and one admin on duty. R reporters walk to the review screen (with the fake's limits off,
to keep the walk short), a tenth of them open an SOS instead, then every Submit and every SOS confirmation
is pressed at the same moment (R alerts, R/10 of them SOS, interleaved). It prints `all_visible_s`
(from the last press until every report's code is
visible in the coordinators' chat, as a card or a digest line), `sos_p95_ms` (press to the SOS code being
visible to a coordinator: in the group, or in the on-duty coordinator's private chat), `received_429` and
`lost` (codes never visible within 5 minutes).
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import ROOT, figure, parser  # type: ignore[import-not-found]

COORDINATORS = -100777
FIRST_USER = 3_000_000


async def walk(person: object, fake: object) -> None:
    """Walk one reporter to the review screen the shortest way."""
    from tests.support.people import Person

    assert isinstance(person, Person)
    fake.add_message(user_id=person.user_id, text="/report")  # type: ignore[attr-defined]
    await fake.wait_for("sendMessage", chat_id=person.user_id, timeout=120)  # type: ignore[attr-defined]
    slow = 300.0  # hundreds walking at once share the bot's 30 sends a second
    await person.tap("cat", "detention", timeout=slow)
    await person.tap("when", "now", timeout=slow)
    await person.tap("region", "bishkek", timeout=slow)
    await person.tap("skip", timeout=slow)
    await person.say(f"Detained at a peaceful picket, reporter {person.user_id}", timeout=slow)
    await person.tap("skip", timeout=slow)
    await person.tap("done", timeout=slow)
    await person.tap("contact", "no", timeout=slow)


async def one_run(reporters: int, cap: float, group_limit: float) -> dict[str, float]:
    """Start the fake server and the bot, walk everyone, submit at once, measure."""
    from tests.fakebot import FakeBotApi
    from tests.support.bots import BotProcess
    from tests.support.people import Person

    async with FakeBotApi() as fake:
        with tempfile.TemporaryDirectory() as data_dir:
            bot = BotProcess(
                fake,
                Path(data_dir) / "data",
                coordinator_chat_id=str(COORDINATORS),
                rate_global_per_s=str(cap),
                rate_group_per_min=str(group_limit),
                rate_private_per_s="0",
                reports_per_hour="100",
            )
            await bot.start()
            try:
                await fake.wait_for("getUpdates", timeout=60)
                people = [Person(fake, FIRST_USER + i) for i in range(reporters)]
                started = time.perf_counter()
                updates_before = len(fake.sent("answerCallbackQuery")) + len(fake.sent("sendMessage"))
                await asyncio.gather(*(walk(p, fake) for p in people))
                walk_s = time.perf_counter() - started
                handled = (
                    len(fake.sent("answerCallbackQuery")) + len(fake.sent("sendMessage")) - updates_before
                )
                spy = await start_profiler(bot)
                cpu_before = process_cpu_s(bot)
                pressed: dict[int, float] = {}
                for person in people:
                    message = person.keyboard_message()
                    submit = next(d for d in person.buttons() if d.split(":")[3] == "submit")
                    pressed[person.user_id] = time.monotonic()
                    fake.add_callback_query(
                        user_id=person.user_id, data=submit, message_id=message["message_id"]
                    )
                alerts = await fake.wait_for(
                    "sendMessage",
                    chat_id=COORDINATORS,
                    count=reporters,
                    timeout=900,
                    predicate=lambda c: "reply_markup" in c.params,
                )
                cpu_s = process_cpu_s(bot) - cpu_before
                if spy is not None:
                    await spy.wait()
                if os.environ.get("BENCH_TIMELINE"):
                    submit_timeline(fake, pressed)
                    print(f"  bot cpu during the presses: {cpu_s:.2f} s")
            finally:
                await bot.stop()
    latencies = []
    for alert in alerts:
        reporter = int(alert.params["text"].split("reporter ")[1].split("<")[0].split()[0])
        latencies.append(alert.at - pressed[reporter])
    latencies.sort()
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[max(0, int(0.95 * len(latencies)) - 1)],
        "max_ms": 1000 * latencies[-1],
        "updates_per_s": handled / walk_s,
    }


def process_cpu_s(bot: Any) -> float:
    """CPU seconds (user + system) the bot process has used so far."""
    fields = Path(f"/proc/{bot.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def submit_timeline(fake: Any, pressed: dict[int, float]) -> None:
    """BENCH_TIMELINE=1: when, after the first press, the bot fetched, answered and alerted (quantiles)."""
    first = min(pressed.values())

    def spread(name: str, stamps: list[float]) -> None:
        stamps = sorted(s - first for s in stamps if s >= first)
        if stamps:
            q = [stamps[int(f * (len(stamps) - 1))] for f in (0, 0.1, 0.5, 0.9, 1)]
            print(f"  {name:<22} n={len(stamps):<4} " + " ".join(f"{1000 * x:6.0f}" for x in q))

    methods = sorted({c.method for c in fake.sent() if c.at >= first})
    for method in methods:
        spread(method, [c.at for c in fake.sent(method)])


async def start_profiler(bot: Any) -> asyncio.subprocess.Process | None:
    """BENCH_SPY=FILE: sample the bot with py-spy (raw stacks, `pip install py-spy`) for the 5 seconds
    after the presses."""
    out = os.environ.get("BENCH_SPY")
    if not out or bot.process is None:
        return None
    pid = str(bot.process.pid)
    spy = await asyncio.create_subprocess_exec(
        *("py-spy", "record", "--pid", pid, "-d", "5", "-f", "raw", "-o", out),
        *("-r", os.environ.get("BENCH_SPY_RATE", "100")),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # py-spy attaches before the first press
    return spy


CODE = re.compile(r"R-[0-9A-Z]{5}")
# What the reporter sees: their own code, which only the key maps to the coordinators' R- code.
REPORTER_CODE = re.compile(r"K-[0-9A-Z]{5}")
ADMIN = 2_999_999


async def crisis_run(reporters: int) -> dict[str, float]:
    """Telegram's real limits, R reporters and R/10 SOS pressed at one moment; see the docstring."""
    from bot.security.keys import read_key_file
    from bot.services.reports.intake import ReporterCodes
    from tests.fakebot import FakeBotApi
    from tests.support.bots import BotProcess
    from tests.support.people import Person

    async with FakeBotApi() as fake:
        with tempfile.TemporaryDirectory() as data_dir:
            log_file = Path(data_dir) / "bot.log"
            bot = BotProcess(
                fake,
                Path(data_dir) / "data",
                output=log_file,
                coordinator_chat_id=str(COORDINATORS),
                admin_ids=str(ADMIN),
                rate_global_per_s="30",
                rate_group_per_min="20",
                rate_private_per_s="1",
                reports_per_hour="100",
            )
            await bot.start()
            try:
                await fake.wait_for("getUpdates", timeout=60)
                fake.add_message(user_id=ADMIN, text="/duty on")
                await fake.wait_for("sendMessage", chat_id=ADMIN, timeout=60)
                people = [Person(fake, FIRST_USER + i) for i in range(reporters)]
                await asyncio.gather(*(walk(p, fake) for p in people))
                reviews = [
                    (
                        next(d for d in p.buttons() if d.split(":")[3] == "submit"),
                        p.keyboard_message()["message_id"],
                    )
                    for p in people
                ]
                sos_people = people[: max(1, reporters // 10)]
                sos_buttons = await asyncio.gather(*(open_sos(p, fake) for p in sos_people))
                fake.set_rate_limit(30)
                fake.set_chat_limits(group_per_min=20, private_per_s=1)
                await asyncio.sleep(61)  # the walk's sends leave the group's and everyone's windows
                before_429 = fake.received_429
                group_429_before = sum(n for chat, n in fake.received_429_by_chat.items() if chat < 0)
                pressed: dict[int, float] = {}
                sos_pressed: dict[int, float] = {}
                presses = []
                # A tenth press SOS instead of Submit: R alerts in all, R/10 of them SOS.
                for person, (submit, review_id) in list(zip(people, reviews, strict=True))[len(sos_people) :]:
                    presses.append((person.user_id, submit, review_id, pressed))
                for person, (data, message_id) in zip(sos_people, sos_buttons, strict=True):
                    presses.append((person.user_id, data, message_id, sos_pressed))
                # Interleaved, as they would arrive: the SOS among the reports.
                reporting = len(people) - len(sos_people)
                step = max(1, reporting // len(sos_people))
                ordered = presses[:reporting]
                for index, sos in enumerate(presses[reporting:]):
                    ordered.insert(min(len(ordered), index * (step + 1) + step // 2), sos)
                for user_id, data, message_id, stamps in ordered:
                    stamps[user_id] = time.monotonic()
                    fake.add_callback_query(user_id=user_id, data=data, message_id=message_id)
                last_press = time.monotonic()
                codes = await codes_of(fake, people[len(sos_people) :], sos_people, within_s=300)
                report_codes, sos_codes = codes
                shown = ReporterCodes(read_key_file(Path(data_dir) / "keys" / "jarchy.key")).of
                seen = await wait_seen(fake, set(report_codes.values()) | set(sos_codes.values()), 300, shown)
            finally:
                await bot.stop()
                errors = [
                    line
                    for line in log_file.read_text(errors="replace").splitlines()
                    if "ERROR" in line or "Traceback" in line
                ]
    if errors:
        print(f"  the bot logged {len(errors)} error(s); first: {errors[0][:200]}")
    if os.environ.get("BENCH_TIMELINE"):
        timeline(fake, last_press, set(sos_codes.values()), {user: pressed[user] for user in report_codes})
    visible = [seen[c] for c in [*report_codes.values(), *sos_codes.values()] if c in seen]
    lost = sum(1 for c in [*report_codes.values(), *sos_codes.values()] if c not in seen)
    lost += reporters - len(report_codes) - len(sos_codes)
    sos_latency = sorted(seen[code] - sos_pressed[user] for user, code in sos_codes.items() if code in seen)
    return {
        "all_visible_s": (max(visible) - last_press) if visible else float("nan"),
        "sos_p95_ms": 1000 * sos_latency[max(0, int(0.95 * len(sos_latency)) - 1)] if sos_latency else 0.0,
        "sos_max_ms": 1000 * sos_latency[-1] if sos_latency else 0.0,
        "received_429": float(fake.received_429 - before_429),
        "received_429_group": float(
            sum(n for chat, n in fake.received_429_by_chat.items() if chat < 0) - group_429_before
        ),
        "lost": float(lost),
        "group_messages_first_60s": float(
            sum(
                1
                for c in fake.calls
                if c.ok and c.params.get("chat_id") == COORDINATORS and 0 <= c.at - last_press <= 60
            )
        ),
    }


def timeline(fake: Any, start: float, sos: set[str], pressed: dict[int, float]) -> None:
    """Print what reached the coordinators and when (BENCH_TIMELINE=1), to see where time goes."""
    receipts = sorted(
        c.at - start
        for c in fake.calls
        if c.ok
        and c.method == "editMessageText"
        and c.params.get("chat_id") in pressed
        and CODE.search(str(c.params.get("text", "")))
    )
    if receipts:
        print(
            f"  receipts: first {receipts[0]:.1f} s, median {statistics.median(receipts):.1f} s, "
            f"last {receipts[-1]:.1f} s"
        )
    for call in fake.calls:
        if call.status == 429 and call.at >= start:
            kind = "sos" if call.params.get("chat_id") in pressed else "other"
            print(f"  {call.at - start:7.2f} s 429 {call.method} chat={call.params.get('chat_id')} ({kind})")
        if not call.ok or call.params.get("chat_id") not in (COORDINATORS, ADMIN):
            continue
        codes = CODE.findall(str(call.params.get("text", "")))
        where = "group" if call.params.get("chat_id") == COORDINATORS else "duty"
        flagged = sum(1 for code in codes if code in sos)
        print(f"  {call.at - start:7.2f} s {where} {call.method} codes={len(codes)} sos={flagged}")


async def open_sos(person: object, fake: object) -> tuple[str, int]:
    """Open an SOS (its confirmation screen); return the confirm button's data and message id."""
    from tests.support.people import Person

    assert isinstance(person, Person)
    before = len(fake.sent("sendMessage", chat_id=person.user_id))  # type: ignore[attr-defined]
    fake.add_message(user_id=person.user_id, text="/sos")  # type: ignore[attr-defined]
    calls = await fake.wait_for(  # type: ignore[attr-defined]
        "sendMessage", chat_id=person.user_id, count=before + 1, timeout=120
    )
    confirm = calls[-1]
    data = next(
        b["callback_data"]
        for row in confirm.params["reply_markup"]["inline_keyboard"]
        for b in row
        if b["callback_data"].endswith(":go")
    )
    return data, int(confirm.result["message_id"])


async def codes_of(
    fake: Any, people: Sequence[Any], sos_people: Sequence[Any], within_s: float
) -> tuple[dict[int, str], dict[int, str]]:
    """Wait for every receipt and SOS screen; return each person's report code and SOS code."""
    deadline = time.monotonic() + within_s
    reports: dict[int, str] = {}
    sos: dict[int, str] = {}
    while time.monotonic() < deadline:
        for person in [*people, *sos_people]:
            user = person.user_id
            for message in fake.chat_messages(user):
                text = str(message.get("text", ""))
                found = REPORTER_CODE.findall(text)
                if not found:
                    continue
                if "SOS" in text or "🆘" in text:
                    sos[user] = found[0]
                else:
                    reports[user] = found[0]
        if len(reports) == len(people) and len(sos) == len(sos_people):
            break
        await asyncio.sleep(0.5)
    return reports, sos


async def wait_seen(
    fake: Any, codes: set[str], within_s: float, shown: Callable[[str], str] = lambda code: code
) -> dict[str, float]:
    """Return when each code first reached a coordinator (the group or an on-duty private chat), by the
    code the reporter was shown (`shown` maps a coordinator's R- code to it)."""
    deadline = time.monotonic() + within_s
    seen: dict[str, float] = {}
    scanned = 0
    while time.monotonic() < deadline:
        calls = fake.calls
        for call in calls[scanned:]:
            if not call.ok or call.params.get("chat_id") not in (COORDINATORS, ADMIN):
                continue
            for code in CODE.findall(str(call.params.get("text", ""))):
                seen.setdefault(shown(code), call.at)
        scanned = len(calls)
        if codes <= set(seen):
            break
        await asyncio.sleep(0.2)
    return seen


def main() -> None:
    """Run and print one line per figure."""
    cli = parser(__doc__.splitlines()[0], default_n=200, default_cap=0)
    cli.add_argument(
        "--group-limit", type=float, default=0, help="messages per minute to one group (0 = none)"
    )
    cli.add_argument(
        "--real-limits",
        action="store_true",
        help="Telegram's real limits (30/s, 1/s per private chat, 20/min per group), SOS among the reports",
    )
    args = cli.parse_args()
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    os.chdir(ROOT)
    if args.real_limits:
        crisis(args.n, args.runs)
        return
    runs = []
    for index in range(args.runs):
        result = asyncio.run(one_run(args.n, args.cap, args.group_limit))
        runs.append(result)
        print(
            f"run {index + 1}: p95 {result['p95_ms']:.0f} ms, {result['updates_per_s']:.0f} updates/s",
            flush=True,
        )
    print(f"reporters: {args.n}")
    print(f"cap_msg_per_s: {args.cap:g}")
    print(f"group_limit_per_min: {args.group_limit:g}")
    for name, digits in (("p50_ms", 0), ("p95_ms", 0), ("max_ms", 0), ("updates_per_s", 0)):
        print(figure(name, [run[name] for run in runs], digits))


def crisis(reporters: int, repetitions: int) -> None:
    """Run the crisis several times and print its figures."""
    runs = []
    for index in range(repetitions):
        result = asyncio.run(crisis_run(reporters))
        runs.append(result)
        print(
            f"run {index + 1}: all visible after {result['all_visible_s']:.1f} s, "
            f"SOS p95 {result['sos_p95_ms']:.0f} ms, {result['received_429']:.0f} x 429, "
            f"{result['lost']:.0f} lost",
            flush=True,
        )
    print(f"reporters: {reporters}")
    print(f"sos: {max(1, reporters // 10)}")
    print("limits: 30 msg/s overall, 1/s per private chat, 20/min per group (edits counted)")
    for name, digits in (
        ("all_visible_s", 1),
        ("sos_p95_ms", 0),
        ("sos_max_ms", 0),
        ("received_429", 0),
        ("received_429_group", 0),
        ("lost", 0),
        ("group_messages_first_60s", 0),
    ):
        print(figure(name, [run[name] for run in runs], digits))


if __name__ == "__main__":
    main()
