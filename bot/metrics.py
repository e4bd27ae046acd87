"""/metrics in Prometheus's text format, on a listener of its own (JARCHY_METRICS_LISTEN, off by default).

Figures are read when scraped: queue depths and what waits come from one aggregate query each; sends and
429s are the delivery worker's running totals; alert latency (queued to sent, for cards and digests to the
coordinators' chat) is a histogram fed at each scrape with the alerts sent since the previous one. Nothing
names a person, a chat or a report; still, volumes and times say how busy the network is, so the listener
belongs on 127.0.0.1 or a private network, never behind the public reverse proxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from bot.runtime.clock import Clock
from bot.runtime.delivery import DeliveryWorker
from bot.services.triage.alerts import ALERT_KINDS, CARD_KIND, DIGEST_KIND
from storage.database import Database
from storage.metrics import Depth, MetricsRepository

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
REMINDER_KINDS = ("reminder", "campaign_reminder")
# What makes a report visible to the coordinators first: its card, or its line in a digest.
LATENCY_KINDS = (CARD_KIND, DIGEST_KIND)
# Seconds from an alert being queued to Telegram taking it: the SOS target is 3 s, a crisis digest 30-60 s.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
_READ_TIMEOUT_S = 10.0


class _Snapshot:
    """What one scrape read from the database."""

    def __init__(self) -> None:
        self.inbox: dict[str, int] = {}
        self.outbox: list[Depth] = []
        self.reminder_lag_s = 0.0
        self.broadcasts: list[tuple[str, str, int]] = []


class _Figures(Collector):
    """Yields the latest snapshot's figures and the worker's totals."""

    def __init__(self, delivery: DeliveryWorker) -> None:
        self._delivery = delivery
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snap = self.snapshot
        inbox = GaugeMetricFamily(
            "jarchy_inbox_updates", "Updates in the inbox, by status.", labels=["status"]
        )
        for status in ("pending", "done", "failed"):
            inbox.add_metric([status], snap.inbox.get(status, 0))
        yield inbox
        outbox = GaugeMetricFamily(
            "jarchy_outbox_rows", "Outbox rows, by kind and status.", labels=["kind", "status"]
        )
        for depth in snap.outbox:
            outbox.add_metric([depth.kind, depth.status], depth.count)
        yield outbox
        held = sum(d.count for d in snap.outbox if d.status == "held" and d.kind in ALERT_KINDS)
        yield GaugeMetricFamily(
            "jarchy_alerts_held",
            "Alerts held for the coordinators' chat until it takes them again.",
            value=held,
        )
        yield GaugeMetricFamily(
            "jarchy_reminder_lag_seconds",
            "How long the longest-waiting due reminder has waited to go out (0: none waits).",
            value=snap.reminder_lag_s,
        )
        progress = GaugeMetricFamily(
            "jarchy_broadcast_messages",
            "Messages of campaigns being delivered, by campaign and status.",
            labels=["campaign", "status"],
        )
        for ref, status, count in snap.broadcasts:
            progress.add_metric([ref, status], count)
        yield progress
        yield CounterMetricFamily(
            "jarchy_sends", "Outbox rows Telegram took since the start.", value=self._delivery.sent_count
        )
        yield CounterMetricFamily(
            "jarchy_telegram_429",
            "Times Telegram answered 429 (too many requests) since the start.",
            value=self._delivery.too_many_count,
        )


class MetricsServer:
    """Serves /metrics, reading the database at each scrape."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        delivery: DeliveryWorker,
        listen: tuple[str, int],
        repo: MetricsRepository | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._listen = listen
        self._repo = repo or MetricsRepository()
        self.registry = CollectorRegistry()
        self._figures = _Figures(delivery)
        self.registry.register(self._figures)
        self._latency = Histogram(
            "jarchy_alert_latency_seconds",
            "From an alert being queued to Telegram taking it (cards and digests to the coordinators' chat).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Alerts sent before this process started were measured by the one before it.
        self._seen_until: datetime = clock.now()
        self._turn = asyncio.Lock()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen for scrapes."""
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._scrape)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, self._listen[0], self._listen[1]).start()
        self._runner = runner
        log.info("metrics on http://%s:%d%s", self._listen[0], self._listen[1], METRICS_PATH)

    async def stop(self) -> None:
        """Stop listening."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def render(self) -> bytes:
        """Read the figures and return them in the text format."""
        async with self._turn:  # two scrapes at once must not feed the same latencies twice
            await self._refresh()
            return generate_latest(self.registry)

    async def _scrape(self, _request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                body = await self.render()
        except Exception:
            log.warning("reading the figures for /metrics failed", exc_info=True)
            return web.Response(status=503, text="the database does not answer\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refresh(self) -> None:
        now = self._clock.now()
        snap = _Snapshot()
        async with self._db.read() as conn:
            snap.inbox = await self._repo.inbox_by_status(conn)
            snap.outbox = await self._repo.outbox_by_kind(conn)
            oldest = await self._repo.oldest_due(conn, REMINDER_KINDS, now)
            snap.broadcasts = await self._repo.broadcasts(conn)
            sent = await self._repo.sent_since(conn, LATENCY_KINDS, self._seen_until)
        snap.reminder_lag_s = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        for queued, taken in sent:
            self._latency.observe(max(0.0, (taken - queued).total_seconds()))
            self._seen_until = max(self._seen_until, taken)
        self._figures.snapshot = snap
