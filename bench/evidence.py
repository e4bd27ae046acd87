"""Memory and time of N people sending a 20 MB file at the same moment.

The bot runs as a real child process (`python -m bot run`) against the fake Bot API, which serves each file
through getFile and /file/bot<token>/<path> as Telegram does. N reporters walk the guided report to the
evidence step, then all send a document of --size-mb at once. It prints `peak_rss_mb` (the bot process's
VmHWM: its peak resident memory over the whole run, start-up included), `idle_rss_mb` (its resident memory
just before the files came), `all_stored_s` (from the moment the files are sent until every sender has the
bot's answer) and `stored` / `refused` (files on disk afterwards, and polite refusals such as "too many at
once").

    python bench/evidence.py                     # 8 x 20 MB, the default 3 downloads at once
    python bench/evidence.py --downloads 8       # all eight downloads at once
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import ROOT, figure  # type: ignore[import-not-found]

COORDINATORS = -100777
FIRST_USER = 4_000_000
MB = 1024 * 1024


def proc_status(pid: int, field: str) -> float:
    """Return a /proc/<pid>/status memory field in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


async def walk(person: object, fake: object) -> None:
    """Walk one reporter to the evidence step the shortest way."""
    from tests.support.people import Person

    assert isinstance(person, Person)
    fake.add_message(user_id=person.user_id, text="/report")  # type: ignore[attr-defined]
    await fake.wait_for("sendMessage", chat_id=person.user_id, timeout=60)  # type: ignore[attr-defined]
    await person.tap("cat", "detention", timeout=60)
    await person.tap("when", "now", timeout=60)
    await person.tap("region", "bishkek", timeout=60)
    await person.tap("skip", timeout=60)
    await person.say(f"Detained at a picket, reporter {person.user_id}", timeout=60)
    await person.tap("skip", timeout=60)


async def one_run(uploads: int, size_mb: int, downloads: int) -> dict[str, float]:
    """Start the fake server and the bot, walk everyone, send every file at once, measure."""
    from tests.fakebot import FakeBotApi
    from tests.support.bots import BotProcess
    from tests.support.people import Person

    async with FakeBotApi() as fake:
        with tempfile.TemporaryDirectory() as data_dir:
            data = Path(data_dir) / "data"
            bot = BotProcess(
                fake,
                data,
                coordinator_chat_id=str(COORDINATORS),
                rate_private_per_s="0",
                rate_global_per_s="0",
                evidence_downloads=str(downloads),
            )
            await bot.start()
            try:
                assert bot.process is not None
                pid = bot.process.pid
                await fake.wait_for("getUpdates", timeout=60)
                people = [Person(fake, FIRST_USER + i) for i in range(uploads)]
                await asyncio.gather(*(walk(p, fake) for p in people))
                files = [
                    fake.add_file(
                        index.to_bytes(4, "big") * (size_mb * MB // 4), file_name=f"video-{index}.mp4"
                    )
                    for index in range(uploads)
                ]
                before = {p.user_id: len(fake.sent("sendMessage", chat_id=p.user_id)) for p in people}
                idle_rss = proc_status(pid, "VmRSS")
                started = time.perf_counter()
                for person, file_id in zip(people, files, strict=True):
                    fake.add_message(user_id=person.user_id, document_file_id=file_id)
                answers = await asyncio.gather(
                    *(
                        fake.wait_for(
                            "sendMessage", chat_id=p.user_id, count=before[p.user_id] + 1, timeout=600
                        )
                        for p in people
                    )
                )
                elapsed = time.perf_counter() - started
                peak = proc_status(pid, "VmHWM")
            finally:
                await bot.stop()
            stored = len(list((data / "evidence").glob("*.bin")))
    accepted = sum(1 for calls in answers if "1" in str(calls[-1].params.get("text", "")).split("\n")[0])
    return {
        "peak_rss_mb": peak,
        "idle_rss_mb": idle_rss,
        "all_stored_s": elapsed,
        "stored": float(stored),
        "refused": float(uploads - stored),
        "accepted_answers": float(accepted),
    }


def main() -> None:
    """Run and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=8, help="people sending a file at once (default 8)")
    parser.add_argument("--size-mb", type=int, default=20, help="size of each file in MB (default 20)")
    parser.add_argument(
        "--downloads", type=int, default=3, help="JARCHY_EVIDENCE_DOWNLOADS (default 3, the bot's default)"
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    args = parser.parse_args()
    assert ROOT  # importing common made the project importable
    runs = []
    for index in range(args.runs):
        result = asyncio.run(one_run(args.n, args.size_mb, args.downloads))
        runs.append(result)
        print(
            f"run {index + 1}: peak {result['peak_rss_mb']:.1f} MB, all stored after "
            f"{result['all_stored_s']:.1f} s, {result['stored']:.0f} stored",
            flush=True,
        )
    print(f"uploads: {args.n}")
    print(f"file_mb: {args.size_mb}")
    print(f"downloads_at_once: {args.downloads}")
    for name, digits in (
        ("peak_rss_mb", 1),
        ("idle_rss_mb", 1),
        ("all_stored_s", 2),
        ("stored", 0),
        ("refused", 0),
    ):
        print(figure(name, [run[name] for run in runs], digits))


if __name__ == "__main__":
    main()
