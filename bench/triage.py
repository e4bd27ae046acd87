"""The coordinators' desk on a large database: /reports with filters, /r, /find and a full CSV export.

100,000 reports (encrypted as the bot stores them, with evidence, notes and triage events) go into a real
SQLite file first; then the desk's own services are timed on it. Exports run in a fresh process each, so
the peak RSS printed is the export's own: a full export and one of about a tenth of the reports should
peak alike if memory is flat.

    python bench/triage.py             # -n 100000 reports, 3 runs

Targets: list and view under 50 ms (median), export peak RSS under 150 MB.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import ROOT, figure, parser, peak_rss_mb  # type: ignore[import-not-found]

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.wiring import Services

ADMIN = 5001
COORDINATOR = 6001
BATCH = 2000
CALLS = 50  # list and view calls per run; the run's figure is their median
LIST_ARGS = ["status=open", "region=osh_city"]
LIST_SINCE_ARGS = ["category=detention", "since=30d"]
LIST_STATUS_ARGS = ["status=open"]  # the everyday triage view: a status alone
SMALL_EXPORT_ARGS = ["region=osh_city"]  # regions are spread evenly: about a tenth of the reports
FIND_WORD = "караванщик"  # in a handful of reports, fewer than a page of hits: /find reads them all
FIND_PLANTED = 5
TARGET_MS = 50.0
TARGET_RSS_MB = 150.0

STATUS_WEIGHTS = {"new": 20, "in_progress": 20, "verified": 15, "closed": 30, "rejected": 15}
# The triage presses that led to each status (report_events), and the revision they leave.
EVENTS = {
    "new": (),
    "in_progress": ("ack", "take"),
    "verified": ("ack", "take", "verify"),
    "closed": ("ack", "take", "close"),
    "rejected": ("ack", "spam"),
}
SENTENCES = (
    "Two officers detained a journalist near the district court and took him to an unmarked car.",
    "Police searched the apartment without showing a warrant; phones and a laptop were taken.",
    "The activist was summoned for questioning about a post on social media.",
    "A group of men in plain clothes followed the reporter from the office to the bus stop.",
    "The lawyer was not allowed to see his client for six hours.",
    "Relatives say he was beaten during the arrest and needs medical help.",
    "Anonymous calls threatened the family if the complaint is not withdrawn.",
    "The hearing was moved without notice and observers were not let into the courtroom.",
    "Her account was blocked after she published the video of the protest.",
    "Witnesses saw the car's number plate and can describe the officers.",
    "Двое сотрудников задержали журналиста у здания районного суда и увезли без объяснений.",
    "В квартире провели обыск без ордера, изъяли телефоны и ноутбук.",
    "Активиста вызвали на допрос из-за публикации в социальных сетях.",
    "Адвоката не пускали к подзащитному более шести часов.",
    "Родственники говорят, что при задержании его избили, нужна медицинская помощь.",
    "Семье угрожали по телефону, требуя забрать заявление.",
    "Заседание перенесли без предупреждения, наблюдателей не пустили в зал.",
    "Неизвестные в гражданской одежде следили за корреспондентом от редакции до остановки.",
    "Свидетели запомнили номер машины и могут описать сотрудников.",
    "После публикации видео с митинга её аккаунт заблокировали.",
)
PLACES = ("near the market", "у здания суда", "Sverdlovsky district", "микрорайон Джал", "bus station")
NOTES = (
    "Called the lawyer; hearing confirmed for next week.",
    "Связались с родственниками, ждём документы.",
    "Possible duplicate of an earlier report from the same district.",
)


def settings_for(data_dir: str) -> Settings:
    """Settings for the benchmark's data directory: one admin from settings."""
    from bot.settings import SecretStr, Settings

    return Settings(
        bot_token=SecretStr("123456:TEST-TOKEN"), data_dir=Path(data_dir), admin_ids=frozenset({ADMIN})
    )


async def open_for(data_dir: str) -> Services:
    """Open the real services on the benchmark's database."""
    from bot.runtime.clock import SystemClock
    from bot.wiring import build_limiter, open_services

    settings = settings_for(data_dir)
    clock = SystemClock()
    return await open_services(settings, clock, build_limiter(settings, clock))


def code_of(index: int) -> str:
    """Return a unique report code for a counter: a bijection of 0…31⁵-1 onto the codes, shuffled."""
    from bot.services.reports.body import CODE_ALPHABET

    base = len(CODE_ALPHABET)
    space = base**5
    value = (index * 7_368_787 + 1_234_567) % space  # 7368787 is prime and does not divide 31⁵
    chars = []
    for _ in range(5):
        value, digit = divmod(value, base)
        chars.append(CODE_ALPHABET[digit])
    return "R-" + "".join(chars)


def report_text(rng: random.Random) -> str:
    """Return 300–800 characters of a report, mixing English and Russian sentences."""
    target = rng.randint(300, 800)
    parts: list[str] = []
    length = 0
    while length < target:
        sentence = rng.choice(SENTENCES)
        parts.append(sentence)
        length += len(sentence) + 1
    text = " ".join(parts)[:target]
    return text.rsplit(" ", 1)[0] + "."


async def build(services: Services, count: int) -> list[str]:
    """Make the team and fill the database with `count` reports; return their codes, oldest first."""
    from sqlalchemy import insert

    from bot.domain.report_form import CATEGORIES, REGIONS
    from bot.security.bindings import contact_chat_binding, note_binding, sealed_body_binding
    from storage.schema import evidence, report_events, report_notes, reports

    await services.users.seen(COORDINATOR, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(COORDINATOR, invite.token)
    await services.team.set_name(COORDINATOR, "Aida")
    await services.team.set_name(ADMIN, "Admin")
    team = [services.pseudonyms.of_user(COORDINATOR), services.pseudonyms.of_user(ADMIN)]

    rng = random.Random(20_260_101)
    cipher = services.cipher
    now = services.clock.now()
    start = now - timedelta(days=730)
    span_s = (now - start).total_seconds() - 3600
    # Ids grow with time, as they do when reports arrive one by one.
    offsets = sorted(rng.uniform(0, span_s) for _ in range(count))
    planted = {count * (k + 1) // (FIND_PLANTED + 1) for k in range(FIND_PLANTED)}
    statuses, weights = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
    codes: list[str] = []
    for first in range(0, count, BATCH):
        rows: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for index in range(first, min(first + BATCH, count)):
            report_id, code = index + 1, code_of(index)
            created = start + timedelta(seconds=offsets[index])
            region = rng.choice(REGIONS)
            text = report_text(rng)
            if index in planted:
                text = f"{text[:200]} {FIND_WORD.capitalize()} {text[200:]}"
            body = {
                "text": text,
                "place": rng.choice(PLACES) if region == "elsewhere" or rng.random() < 0.3 else None,
                "location": [round(rng.uniform(39.5, 43.0), 2), round(rng.uniform(69.5, 80.0), 2)]
                if rng.random() < 0.4
                else None,
                "people": f"{rng.randint(1, 12)} people" if rng.random() < 0.2 else None,
            }
            contactable = rng.random() < 0.3
            status = rng.choices(statuses, weights)[0]
            handled = status != "new"
            assignee = rng.choice(team) if status in ("in_progress", "verified") else None
            if status == "closed":
                assignee = rng.choice(team)
            acknowledged = created + timedelta(minutes=rng.randint(2, 600)) if handled else None
            finished = status in ("closed", "rejected")
            closed = created + timedelta(hours=rng.randint(6, 24 * 60)) if finished else None
            reason = None
            if status == "rejected":
                reason = "spam" if rng.random() < 0.7 else "duplicate"
            category = rng.choice(CATEGORIES)
            occurred = created - timedelta(hours=rng.randint(0, 72))
            precision = rng.choice(("exact", "date"))
            rows.append(
                {
                    "id": report_id,
                    "code": code,
                    "kind": "report",
                    "category": category,
                    "occurred_at": occurred,
                    "occurred_precision": precision,
                    "region": region,
                    "body": cipher.encrypt_json(
                        body,
                        binding=sealed_body_binding(
                            code, "report", category, occurred, precision, region, contactable, created
                        ),
                    ),
                    "contactable": contactable,
                    "reporter": services.pseudonyms.of_user(10_000_000 + index) if contactable else None,
                    "contact_chat": (
                        cipher.encrypt_text(str(10_000_000 + index), binding=contact_chat_binding(code))
                        if contactable
                        else None
                    ),
                    "status": status,
                    "submit_key": f"{index:016x}",
                    "created_at": created,
                    "updated_at": closed or acknowledged or created,
                    "assignee": assignee,
                    "acknowledged_by": rng.choice(team) if handled else None,
                    "acknowledged_at": acknowledged,
                    "reason": reason,
                    "duplicate_of": None,
                    "closed_at": closed,
                    "revision": len(EVENTS[status]),
                }
            )
            actor = assignee or team[0]
            for action in EVENTS[status]:
                events.append(
                    {"report_id": report_id, "actor": actor, "action": action,
                     "at": acknowledged or created}
                )  # fmt: skip
            if rng.random() < 0.10:
                for _ in range(rng.randint(1, 2)):
                    uid = rng.randbytes(16).hex()
                    items.append(
                        {"uid": uid, "report_id": report_id, "owner": None,
                         "kind": rng.choice(("photo", "video", "document")),
                         "sha256": hashlib.sha256(rng.randbytes(32)).hexdigest(),
                         "size": rng.randint(20_000, 5_000_000), "received_at": created,
                         "file_ref": cipher.encrypt_text(
                             f"AgACAgIAAxkBAAI{rng.randbytes(24).hex()}", binding=f"evidence.file_ref:{uid}"
                         )}
                    )  # fmt: skip
            if rng.random() < 0.05:
                notes.append(
                    {"report_id": report_id, "author": actor, "kind": "note",
                     "body": cipher.encrypt_text(rng.choice(NOTES), binding=note_binding(code, "note")),
                     "at": (acknowledged or created) + timedelta(hours=1)}
                )  # fmt: skip
            codes.append(code)
        async with services.db.write() as conn:
            await conn.execute(insert(reports), rows)
            if items:
                await conn.execute(insert(evidence), items)
            if notes:
                await conn.execute(insert(report_notes), notes)
            if events:
                await conn.execute(insert(report_events), events)
    return codes


async def timed_calls(calls: int, call: Callable[[], Awaitable[None]]) -> list[float]:
    """Await `call()` `calls` times (after one warm-up); return each call's milliseconds."""
    await call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def query_plans(services: Services, args: Sequence[str]) -> list[str]:
    """Return SQLite's plan for each statement one list page runs (captured as it runs)."""
    from sqlalchemy import event

    captured: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM reports" in statement:
            captured.append((statement, parameters))

    sync_engine = services.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        query = await services.desk.parse_query(COORDINATOR, list(args))
        await services.desk.page(COORDINATOR, query)
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)
    plans = []
    async with services.db.read() as conn:
        for statement, parameters in captured:
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plans.append(" / ".join(str(row[-1]) for row in rows))
    return plans


async def measure(services: Services, codes: list[str], rng: random.Random) -> dict[str, float]:
    """One run of the in-process figures: list pages, views and one search over everything."""
    desk = services.desk

    async def listing(args: Sequence[str]) -> None:
        query = await desk.parse_query(COORDINATOR, list(args))
        page = await desk.page(COORDINATOR, query)
        assert page.lines, f"no reports match {args}"

    async def list_main() -> None:
        await listing(LIST_ARGS)

    async def list_since() -> None:
        await listing(LIST_SINCE_ARGS)

    async def list_status() -> None:
        await listing(LIST_STATUS_ARGS)

    async def view() -> None:
        shown = await desk.view(COORDINATOR, rng.choice(codes))
        assert shown.body.text

    lists = await timed_calls(CALLS, list_main)
    sinces = await timed_calls(CALLS, list_since)
    statuses = await timed_calls(CALLS, list_status)
    views = await timed_calls(CALLS, view)
    started = time.perf_counter()
    hits, scanned = await desk.find(COORDINATOR, FIND_WORD)
    find_s = time.perf_counter() - started
    return {
        "list_ms": statistics.median(lists),
        "list_p95_ms": statistics.quantiles(lists, n=20)[-1],
        "list_since_ms": statistics.median(sinces),
        "list_status_ms": statistics.median(statuses),
        "view_ms": statistics.median(views),
        "view_p95_ms": statistics.quantiles(views, n=20)[-1],
        "find_ms": find_s * 1000,
        "find_reports_per_s": scanned / find_s,
        "find_scanned": scanned,
        "find_hits": len(hits),
    }


async def export_only(data_dir: str, args: Sequence[str]) -> dict[str, float]:
    """Export in this (fresh) process to a CSV file; time it and read this process's peak RSS."""
    services = await open_for(data_dir)
    path = Path(data_dir) / f"export-{os.getpid()}.csv"
    try:
        query = services.desk.parse_filters(list(args))
        before_mb = peak_rss_mb()
        started = time.perf_counter()
        with path.open("w", encoding="utf-8", newline="") as handle:
            summary = await services.exports.write(query, {"csv": handle})
        export_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1024 / 1024
    finally:
        await services.close()
        path.unlink(missing_ok=True)
    return {
        "export_s": export_s,
        "rows": summary.rows,
        "file_mb": size_mb,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": before_mb,
    }


def export_child(data_dir: str, args: Sequence[str]) -> dict[str, float]:
    """Run one export in a fresh process; return what it measured."""
    child = subprocess.run(  # noqa: S603 - this very script, with arguments it made
        [sys.executable, __file__, "--export-only", data_dir, *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


async def desk_runs(data_dir: str, count: int, runs: int) -> tuple[float, list[dict[str, float]], list[str]]:
    """Seed, then measure the in-process figures `runs` times; return seed seconds, runs and plans."""
    services = await open_for(data_dir)
    try:
        started = time.perf_counter()
        codes = await build(services, count)
        seed_s = time.perf_counter() - started
        print(f"seeded {count} reports in {seed_s:.1f} s", flush=True)
        plans = [
            f"plan {' '.join(args)}: {plan}"
            for args in (LIST_ARGS, LIST_SINCE_ARGS, LIST_STATUS_ARGS)
            for plan in await query_plans(services, args)
        ]
        rng = random.Random(7)
        results = []
        for index in range(runs):
            result = await measure(services, codes, rng)
            results.append(result)
            print(
                f"run {index + 1}: list {result['list_ms']:.1f} ms, "
                f"list since {result['list_since_ms']:.1f} ms, "
                f"list status {result['list_status_ms']:.1f} ms, view {result['view_ms']:.1f} ms, "
                f"find {result['find_ms']:.0f} ms "
                f"({result['find_scanned']:.0f} read, {result['find_hits']:.0f} hits)",
                flush=True,
            )
    finally:
        await services.close()
    return seed_s, results, plans


def main() -> None:
    """Seed, measure the desk, export in children, print one line per figure."""
    if len(sys.argv) > 1 and sys.argv[1] == "--export-only":
        print(json.dumps(asyncio.run(export_only(sys.argv[2], sys.argv[3:]))))
        return
    cli = parser(__doc__.splitlines()[0], default_n=100_000, default_cap=0)
    args = cli.parse_args()  # --cap does not apply here: nothing is sent
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as data_dir:
        seed_s, runs, plans = asyncio.run(desk_runs(data_dir, args.n, args.runs))
        db_mb = sum(p.stat().st_size for p in Path(data_dir).glob("jarchy.db*")) / 1024 / 1024
        fulls, smalls = [], []
        for index in range(args.runs):
            full, small = export_child(data_dir, []), export_child(data_dir, SMALL_EXPORT_ARGS)
            fulls.append(full)
            smalls.append(small)
            print(
                f"export run {index + 1}: {full['rows']:.0f} rows in {full['export_s']:.1f} s, "
                f"peak {full['peak_rss_mb']:.1f} MB; {small['rows']:.0f} rows, "
                f"peak {small['peak_rss_mb']:.1f} MB",
                flush=True,
            )
    for plan in plans:
        print(plan)
    print(f"reports: {args.n}")
    print(f"seed_s: {seed_s:.1f}")
    print(f"db_mb: {db_mb:.1f}")
    for name, digits in (
        ("list_ms", 2),
        ("list_p95_ms", 2),
        ("list_since_ms", 2),
        ("list_status_ms", 2),
        ("view_ms", 2),
        ("view_p95_ms", 2),
        ("find_ms", 0),
        ("find_reports_per_s", 0),
        ("find_hits", 0),
    ):
        print(figure(name, [run[name] for run in runs], digits))
    print(figure("export_s", [r["export_s"] for r in fulls], 2))
    print(figure("export_rows_per_s", [r["rows"] / r["export_s"] for r in fulls], 0))
    print(f"export_rows: {fulls[0]['rows']:.0f}")
    print(f"export_file_mb: {fulls[0]['file_mb']:.1f}")
    print(figure("export_rss_before_mb", [r["rss_before_mb"] for r in fulls], 1))
    print(figure("export_peak_rss_mb", [r["peak_rss_mb"] for r in fulls], 1))
    print(f"export_small_rows: {smalls[0]['rows']:.0f}")
    print(figure("export_peak_rss_small_mb", [r["peak_rss_mb"] for r in smalls], 1))
    list_ms = statistics.median(run["list_ms"] for run in runs)
    since_ms = statistics.median(run["list_since_ms"] for run in runs)
    status_ms = statistics.median(run["list_status_ms"] for run in runs)
    view_ms = statistics.median(run["view_ms"] for run in runs)
    rss = statistics.median(r["peak_rss_mb"] for r in fulls)
    small_rss = statistics.median(r["peak_rss_mb"] for r in smalls)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    slowest = max(list_ms, since_ms, status_ms)
    flat = "flat" if rss - small_rss < 0.1 * small_rss + 10 else "grows with rows"
    print(
        f"targets: list {list_ms:.1f} ms / since {since_ms:.1f} ms / status {status_ms:.1f} ms "
        f"< {TARGET_MS:.0f} ms {verdict(slowest < TARGET_MS)}; "
        f"view {view_ms:.1f} ms < {TARGET_MS:.0f} ms {verdict(view_ms < TARGET_MS)}; "
        f"export peak RSS {rss:.1f} MB < {TARGET_RSS_MB:.0f} MB {verdict(rss < TARGET_RSS_MB)} "
        f"(a tenth of the rows: {small_rss:.1f} MB, {flat})"
    )
    print(f"total_s: {time.perf_counter() - started_all:.0f}")


if __name__ == "__main__":
    main()
