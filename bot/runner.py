"""Run the bot, with long polling or behind a webhook: the durable inbox in, the delivery worker out,
until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from bot.app import build_application, dispatch_update
from bot.context import JarchyApp
from bot.metrics import MetricsServer
from bot.runtime.clock import Clock
from bot.runtime.fleet import inbox_id_base, read_active_bot, running_settings
from bot.runtime.inbox import DurableInbox
from bot.runtime.instance import lock_transient_keys
from bot.services.reports.intake import CONVERSATION_CLEANUP_DELAY
from bot.settings import Settings
from bot.telegram_start import BotSwitched, reach_telegram
from bot.webhook import WebhookServer, keep_webhook_set, webhook_path, webhook_secret
from bot.wiring import Services

log = logging.getLogger(__name__)


OnApp = Callable[[JarchyApp], None]


async def run_polling(
    settings: Settings,
    *,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    app: JarchyApp | None = None,
    on_app: OnApp | None = None,
) -> None:
    """Start everything, run until `stop` is set (or SIGINT/SIGTERM), then stop in reverse order.

    `on_app` hears of every Application built: a switch to a backup bot starts a new one in-process.
    """
    # Before anything else: a second bot on this data directory would turn the transient keys over under
    # the first one's feet (bot.instance.lock_transient_keys).
    lock = lock_transient_keys(settings.data_dir)
    try:
        await _run_fleet(settings, clock, stop, app, on_app, webhook=False)
    finally:
        lock.close()


async def run_webhook(
    settings: Settings,
    *,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    app: JarchyApp | None = None,
    on_app: OnApp | None = None,
) -> None:
    """Like run_polling, but Telegram posts the updates to the bot's web server (bot.webhook)."""
    if not settings.webhook_url:
        raise ValueError("webhook mode needs JARCHY_WEBHOOK_URL")
    lock = lock_transient_keys(settings.data_dir)
    try:
        await _run_fleet(settings, clock, stop, app, on_app, webhook=True)
    finally:
        lock.close()


async def _run_fleet(
    settings: Settings,
    clock: Clock | None,
    stop: asyncio.Event | None,
    app: JarchyApp | None,
    on_app: OnApp | None,
    *,
    webhook: bool,
) -> None:
    """Run the bot the database names in use; after a switch, start again on the new one."""
    stop = stop or asyncio.Event()
    while True:
        running = running_settings(settings, await read_active_bot(settings))
        if app is None or app.bot_data.settings.bot_token != running.bot_token:
            app = build_application(running, clock)
        if on_app is not None:
            on_app(app)
        if not await _run(running, stop, app, webhook=webhook):
            return
        app = None
        log.warning("starting again on the bot now in use")


async def _run(settings: Settings, stop: asyncio.Event, app: JarchyApp, *, webhook: bool) -> bool:
    """Run until stopped; return True when another bot is in use now and the run must start again."""
    _install_signal_handlers(stop)
    # getMe until Telegram answers (initialize asks once and raises); a refused token stops here, unless
    # a backup bot may take over.
    on_refused = _refused_at_start if settings.backup_bot_tokens else None
    try:
        if not await reach_telegram(app, settings, stop, on_refused):
            return False
    except BotSwitched:
        return True
    async with app:  # initialized already … shutdown
        if app.post_init is not None:
            await app.post_init(app)
        try:
            return await _serve(app, settings, stop, webhook=webhook)
        finally:
            if app.post_shutdown is not None:
                await app.post_shutdown(app)


async def _refused_at_start(services: Services) -> bool:
    # Refused before the bot could start: the watch records since when, switches once that is long
    # enough, and notices a switch made meanwhile with `jarchy bot switch`.
    watch = services.fleet_watch
    try:
        # The sender's lease is only run once the bot is up: one try here lets one instance of a
        # cluster that starts while its token is refused decide on the switch.
        leading = not services.db.is_postgresql or services.sender.is_leader or await services.sender.step()
        await watch.check(may_switch=leading)
        return watch.switched.is_set() or await watch.follow()
    except Exception:
        # A locked database or a lost connection: the next try comes with the next getMe.
        log.exception("could not decide on a switch to a backup bot; trying again")
        return False


async def _serve(app: JarchyApp, settings: Settings, stop: asyncio.Event, *, webhook: bool) -> bool:
    services = app.bot_data.services
    if services is None:
        raise RuntimeError("post_init did not open the services")
    if not webhook:
        # A webhook left over from another deployment would make getUpdates fail with 409.
        await services.api.call("deleteWebhook", {"drop_pending_updates": False})
    inbox = DurableInbox(
        db=services.db,
        repo=services.inbox_repo,
        api=services.api,
        cipher=services.cipher,
        clock=services.clock,
        dispatch=lambda raw: dispatch_update(app, raw),
        polling_timeout_s=settings.polling_timeout_s,
        max_attempts=settings.inbox_max_attempts,
        # Several instances may share PostgreSQL: rows are claimed, and one instance polls at a time.
        owner=services.delivery.owner if services.db.is_postgresql else None,
        poller=services.poller if services.db.is_postgresql and not webhook else None,
        id_base=inbox_id_base(services.fleet.active),
        on_refused=services.fleet_watch.refused if services.fleet.enabled else None,
    )
    server: WebhookServer | None = None
    if webhook:
        secret = webhook_secret(settings, services.key)
        server = WebhookServer(
            inbox=inbox,
            db=services.db,
            secret=secret,
            path=webhook_path(settings.webhook_url),
            listen=settings.webhook_listen,
        )
    metrics = (
        MetricsServer(
            db=services.db, clock=services.clock, delivery=services.delivery, listen=settings.metrics_listen
        )
        if settings.metrics_listen is not None
        else None
    )
    if services.exchange is not None:
        # Before any update is handled: what a peer sealed must be readable from the first one.
        try:
            await services.exchange.sync()
        except Exception:
            log.warning(
                "could not exchange transient keys at start; trying again while running", exc_info=True
            )
    await app.start()
    if metrics is not None:
        await metrics.start()
    if server is not None:
        # Listening before Telegram is told where to post: its first request must find the server up.
        await server.start()
    intake = (
        asyncio.create_task(inbox.run_dispatch(), name="inbox")
        if server is not None
        else asyncio.create_task(inbox.run(), name="inbox")
    )
    tasks = {
        intake,
        asyncio.create_task(services.delivery.run(), name="delivery"),
        # The group's budget is planned in a loop of its own: a scheduler job can be skipped when the
        # loop is busy, which is exactly when digests are needed.
        asyncio.create_task(services.planner.run(when=lambda: services.sender.is_leader), name="planner"),
    }
    leases = {
        asyncio.create_task(services.sender.run(), name="sender-lease"),
        *({asyncio.create_task(services.poller.run(), name="poller-lease")} if server is None else set()),
    }
    if services.exchange is not None:
        tasks.add(asyncio.create_task(services.exchange.run(), name="key-exchange"))
    fleet_watch = services.fleet_watch
    if services.fleet.enabled:
        # One instance (the sender) listens to the standby bots and may switch by itself; every instance
        # follows a switch.
        leading = lambda: services.sender.is_leader  # noqa: E731
        tasks.add(asyncio.create_task(fleet_watch.run(when=leading), name="fleet-watch"))
        for listener in services.standby:
            tasks.add(asyncio.create_task(listener.run(when=leading), name="standby-bot"))
    switched = asyncio.create_task(fleet_watch.switched.wait(), name="switched")
    # Setting the webhook ends by itself once Telegram has it; it is watched like the loops only for a
    # fatal answer (a refused token or URL), which stops the bot.
    setter = (
        asyncio.create_task(keep_webhook_set(services.api, settings, secret, server), name="set-webhook")
        if server is not None
        else None
    )
    heartbeat = asyncio.create_task(_beat(heartbeat_path(settings)), name="heartbeat")
    waiter = asyncio.create_task(stop.wait(), name="stop")
    log.info("jarchy is running (%s)", "webhook" if server is not None else "long polling")
    try:
        watched = {*tasks, waiter, switched} | ({setter} if setter is not None else set())
        while True:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {waiter, switched}:
                if task.exception() is not None:
                    log.error("%s stopped", task.get_name(), exc_info=task.exception())
            if setter is None or done != {setter} or setter.exception() is not None:
                break
            watched.discard(setter)  # the webhook is set: carry on
    finally:
        if setter is not None and not setter.done():
            setter.cancel()
        if server is not None:
            # No new updates first: what Telegram sends from now on waits on its side and comes again.
            await server.stop()
        if metrics is not None:
            await metrics.stop()
        await _clean_up_phones_before_stopping(services)
        inbox.stop()
        services.delivery.stop()
        services.planner.stop()
        if services.exchange is not None:
            services.exchange.stop()
        fleet_watch.stop()
        for listener in services.standby:
            listener.stop()
        waiter.cancel()
        switched.cancel()
        heartbeat.cancel()
        results = await _stop_within(tasks, SHUTDOWN_GRACE_S)
        # Released last, after the loops that need them stopped: a standby takes over at once.
        services.sender.stop()
        services.poller.stop()
        await _stop_within(leases, SHUTDOWN_GRACE_S)
        await app.stop()
        log.info("jarchy stopped")
    refused = setter.exception() if setter is not None and setter.done() and not setter.cancelled() else None
    if refused is not None:
        raise refused
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
    return fleet_watch.switched.is_set() and not stop.is_set()


HEARTBEAT_INTERVAL_S = 30.0
# Docker kills a container 10 s after SIGTERM; what has not finished by then is cut anyway, so cut it
# ourselves a little earlier, with a log line saying where it hung. Nothing is lost: an update still being
# handled stays pending in the inbox, and outbox rows this run claimed are reclaimed at the next start.
SHUTDOWN_GRACE_S = 8.0
# How long a stop waits for the deletions of conversations just submitted (they are due seconds later).
CLEANUP_AT_STOP_S = 3.0


async def _clean_up_phones_before_stopping(services: Services) -> None:
    """Send the deletions of conversations submitted in the last seconds before stopping: a stopped bot
    would leave them on the reporters' phones until it runs again, and a seized server may never run again."""
    try:
        # Bounded as a whole too: a locked or lost database must not hold the stop up.
        left = await asyncio.wait_for(
            services.delivery.hurry("cleanup", CONVERSATION_CLEANUP_DELAY, CLEANUP_AT_STOP_S),
            CLEANUP_AT_STOP_S + 1.0,
        )
    except Exception:
        log.warning("could not send the latest conversations' deletions before stopping", exc_info=True)
        return
    if left:
        log.warning("%d conversation deletions still queued at stop; they go at the next start", left)


async def _stop_within(tasks: set[asyncio.Task[None]], grace_s: float) -> list[BaseException | None]:
    """Let the loops finish what is in flight for up to `grace_s`, then cancel the rest."""
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        log.warning("%s did not stop within %.0f s; cancelling it", task.get_name(), grace_s)
        log.warning("  waiting in %s", " > ".join(_awaiting(task.get_coro())))
        task.cancel()
    return await asyncio.gather(*tasks, return_exceptions=True)


def _awaiting(coro: object) -> list[str]:
    # A suspended task's stack holds one frame; the chain of awaits shows where it actually waits.
    places: list[str] = []
    while coro is not None and len(places) < 12:
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            places.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None)
    return places


def heartbeat_path(settings: Settings) -> Path:
    """Return the file whose age tells a container healthcheck the bot is alive."""
    return settings.data_dir / "heartbeat"


async def _beat(path: Path) -> None:
    # The file's modification time is the signal; `jarchy health` reads it.
    while True:
        await asyncio.to_thread(path.touch)
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread (tests run the bot in a task of their own loop).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
