"""Time from a reporter's Submit reaching Telegram to the alert reaching the coordinators' chat.

R reporters walk the guided report concurrently through the fake Bot API (the bot runs as a real child
process, `python -m bot run`), then all press Submit at once. Latency is measured on the fake server's
clock: the moment the Submit press is queued for the bot, and the moment the alert arrives.

    python bench/alert_latency.py                # R = 200, no overall cap, no per-group limit
    python bench/alert_latency.py --cap 30 -n 20 # Telegram's free overall limit

Telegram allows about 20 messages a minute into one group; with that limit on (--group-limit 20),
200 simultaneous alerts necessarily spread over ten minutes, so the default run lifts it to measure the
bot's own latency. The figures say which limits applied.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, figure, parser  # type: ignore[import-not-found]

COORDINATORS = -100777
FIRST_USER = 3_000_000


async def walk(person: object, fake: object) -> None:
    """Walk one reporter to the review screen the shortest way."""
    from tests.e2e.reporting import Person

    assert isinstance(person, Person)
    fake.add_message(user_id=person.user_id, text="/report")  # type: ignore[attr-defined]
    await fake.wait_for("sendMessage", chat_id=person.user_id, timeout=120)  # type: ignore[attr-defined]
    await person.tap("cat", "detention")
    await person.tap("when", "now")
    await person.tap("region", "bishkek")
    await person.tap("skip")
    await person.say(f"Detained at a peaceful picket, reporter {person.user_id}")
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", "no")


async def one_run(reporters: int, cap: float, group_limit: float) -> dict[str, float]:
    """Start the fake server and the bot, walk everyone, submit at once, measure."""
    from tests.e2e.conftest import BotProcess
    from tests.e2e.reporting import Person
    from tests.fakebot import FakeBotApi

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


def main() -> None:
    """Run and print one line per figure."""
    cli = parser(__doc__.splitlines()[0], default_n=200, default_cap=0)
    cli.add_argument(
        "--group-limit", type=float, default=0, help="messages per minute to one group (0 = none)"
    )
    args = cli.parse_args()
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    os.chdir(ROOT)
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


if __name__ == "__main__":
    main()
