"""Build the python-telegram-bot Application: handlers in a stated order, resources in post_init."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telegram import BotCommandScopeAllPrivateChats, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, Defaults, Job

from bot.context import BotData, JarchyApp, JarchyContext
from bot.ptb_request import AiohttpRequest
from bot.runtime.clock import Clock, SystemClock
from bot.runtime.inbox import Dispatch, DispatchResult
from bot.runtime.update_run import handling
from bot.send_limits import SharedRateLimiter
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from handlers import (
    account,
    campaigns,
    case_commands,
    cases,
    contact,
    desk,
    errors,
    fallback,
    fleet,
    identity,
    language,
    membership,
    reports,
    sos,
    start,
    subscriptions,
    team,
    triage,
    users,
)
from handlers.errors import TELEGRAM_FAULT
from messages import LANGUAGES, catalogs
from messages.menus import bot_commands

log = logging.getLogger(__name__)

JobCallback = Callable[[JarchyContext], Coroutine[Any, Any, None]]

# Drafts expire within a day and SOS follow-ups within half an hour: purge often enough for both.
PURGE_INTERVAL_S = 300
# Held alerts are probed (one at a time) and unanswered SOS escalated this often.
PROBE_INTERVAL_S = 15
ESCALATE_INTERVAL_S = 20
# The audit chain's head goes to the admins at least daily (the pass decides from the database whether a day
# has passed, so restarts change nothing); looking hourly bounds the lateness to an hour.
AUDIT_HEAD_INTERVAL_S = 3600
# A removal from the coordinators' group is two steps; the second waits for the first at most this long.
REMOVALS_INTERVAL_S = 5
# The first member check after a start: soon, so frequent restarts cannot keep putting it off.
MEMBER_CHECK_FIRST_S = 120


class StatelessApplication(Application):  # type: ignore[type-arg]
    """PTB's Application without its persistence bookkeeping, which jarchy does not use.

    Without a persistence, PTB still adds every update's chat and user id to two sets that only a
    persistence run empties: memory that grows with each new person, and a list of every Telegram id
    the bot has heard from since its start for anyone who reads the process's memory.
    """

    def _mark_for_persistence_update(
        self, *, update: object | None = None, job: Job[Any] | None = None
    ) -> None:
        if self.persistence is not None:
            super()._mark_for_persistence_update(update=update, job=job)


def build_application(settings: Settings, clock: Clock | None = None) -> JarchyApp:
    """Build the Application; nothing is opened until post_init."""
    clock = clock or SystemClock()
    limiter = build_limiter(settings, clock)
    resolved_clock = clock

    class AppBotData(BotData):
        def __init__(self) -> None:
            super().__init__(settings=settings, clock=resolved_clock, limiter=limiter)

    def chat_key(chat_id: int | str) -> str | None:
        services = app.bot_data.services
        return services.pseudonyms.of_chat(chat_id) if services is not None else None

    app: JarchyApp = (
        ApplicationBuilder()
        .application_class(StatelessApplication)
        .token(settings.bot_token.get_secret_value())
        .base_url(f"{settings.api_url}/bot")
        .base_file_url(f"{settings.api_url}/file/bot")
        # Updates come from the durable inbox, not from PTB's Updater, which acknowledges them too early.
        .updater(None)
        .local_mode(settings.api_local_mode)
        .request(AiohttpRequest(settings.bot_token, proxy_url=settings.proxy_url))
        .get_updates_request(AiohttpRequest(settings.bot_token, connections=1, proxy_url=settings.proxy_url))
        .context_types(ContextTypes(context=JarchyContext, bot_data=AppBotData))
        # Every text is rendered by messages/ with its placeholders escaped; a plain one says parse_mode=None.
        # The outbox applies the same default when it queues (bot.runtime.outbox.with_parse_mode).
        .defaults(Defaults(parse_mode=ParseMode.HTML))
        .rate_limiter(SharedRateLimiter(limiter, chat_key))
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    # Order matters: recognising the user comes first (an earlier group); feature handlers next; the
    # fallbacks last within group 0, so they only answer what no feature took; errors are separate.
    users.register(app)
    team.register(app)  # its invite-link /start goes ahead of the plain /start
    campaigns.register(app)  # so does the template link's /start
    start.register(app)
    language.register(app)
    reports.register(app)  # also the input router in group -1, ahead of the fallbacks
    sos.register(app)
    account.register(app)
    identity.register(app)
    triage.register(app)
    desk.register(app)
    contact.register(app)
    subscriptions.register(app)
    cases.register(app)
    case_commands.register(app)
    membership.register(app)
    fleet.register(app)
    fallback.register(app)
    errors.register(app)
    return app


async def dispatch_update(app: JarchyApp, raw: dict[str, Any]) -> DispatchResult:
    """Hand one stored update to the Application and report whether it must be tried again."""
    update = Update.de_json(raw, app.bot)
    with handling(update.update_id) as run:
        await app.process_update(update)
    error = app.bot_data.retry_marks.pop(update.update_id, None)
    if error and run.committed:
        # The action is in the database; what failed came after it (most often the reply timing out,
        # which Telegram may well have delivered). Running the update again would only repeat its effects.
        log.warning("update %s not retried after %s: its action had committed", update.update_id, error)
        return DispatchResult(Dispatch.DONE)
    if not error:
        return DispatchResult(Dispatch.DONE)
    return DispatchResult(Dispatch.RETRY, error, counts=error.startswith(TELEGRAM_FAULT))


async def _post_init(app: JarchyApp) -> None:
    data = app.bot_data
    if data.services is None:  # opened already if the bot waited for Telegram (bot.telegram_start)
        data.services = await open_services(data.settings, data.clock, data.limiter)
    await _publish_commands(app)
    if app.job_queue is not None:
        app.job_queue.run_repeating(_purge, interval=PURGE_INTERVAL_S, first=60, name="purge")
        app.job_queue.run_repeating(
            _anchor_audit, interval=AUDIT_HEAD_INTERVAL_S, first=60, name="audit_head"
        )
        interval = data.settings.reminder_interval_s
        app.job_queue.run_repeating(_materialise_reminders, interval=interval, first=1, name="reminders")
        every = data.settings.broadcast_interval_s
        app.job_queue.run_repeating(_broadcast, interval=every, first=1, name="broadcast")
        app.job_queue.run_repeating(_probe_held, interval=PROBE_INTERVAL_S, first=5, name="probe")
        app.job_queue.run_repeating(_escalate, interval=ESCALATE_INTERVAL_S, first=5, name="escalate")
        app.job_queue.run_repeating(_follow_removals, interval=REMOVALS_INTERVAL_S, first=5, name="removals")
        check_every = data.settings.member_check_min * 60
        app.job_queue.run_repeating(
            _check_members, interval=check_every, first=min(check_every, MEMBER_CHECK_FIRST_S), name="members"
        )


def _one_at_a_time(name: str, run: Callable[[Services, JarchyContext], Awaitable[object]]) -> JobCallback:
    """Run a periodic pass only where no other instance runs it right now; skip it otherwise (the next
    tick comes soon, and each pass re-derives its work from the database)."""

    async def job(context: JarchyContext) -> None:
        services = context.services
        async with services.passes.hold(name) as ours:
            if ours:
                await run(services, context)
            else:
                log.debug("the %s pass runs on another instance; skipped here", name)

    return job


async def _purge_pass(services: Services, _context: JarchyContext) -> None:
    await services.retention.purge(scrub=False)
    await services.hearings.purge()
    await services.team.purge_invites()


async def _purge(context: JarchyContext) -> None:
    await _purge_once(context)
    # Every instance scrubs, whoever purged: the transient keys it retires are its own, and rows sealed
    # under a peer's keys are left alone by its scrub.
    await context.services.history.scrub_quietly()


async def _anchor_pass(services: Services, _context: JarchyContext) -> None:
    if await services.audit.anchor_daily():
        services.outbox.notify()


async def _broadcast_pass(services: Services, context: JarchyContext) -> None:
    if services.broadcaster.bot_username is None:
        services.broadcaster.bot_username = context.bot.username
    await services.broadcaster.run_pass()


_purge_once = _one_at_a_time("purge", _purge_pass)
_anchor_audit = _one_at_a_time("audit_head", _anchor_pass)
_materialise_reminders = _one_at_a_time("reminders", lambda services, _: services.hearings.materialise())
_probe_held = _one_at_a_time("probe", lambda services, _: services.watch.probe())
_escalate = _one_at_a_time("escalate", lambda services, _: services.duty.escalate())
_follow_removals = _one_at_a_time("removals", lambda services, _: services.members.follow_removals())
_check_members = _one_at_a_time("members", lambda services, _: services.members.check())
_broadcast = _one_at_a_time("broadcast", _broadcast_pass)


async def _post_shutdown(app: JarchyApp) -> None:
    services, app.bot_data.services = app.bot_data.services, None
    if services is not None:
        await services.close()


async def _publish_commands(app: JarchyApp) -> None:
    texts = catalogs()
    scope = BotCommandScopeAllPrivateChats()
    try:
        for language in LANGUAGES:
            await app.bot.set_my_commands(bot_commands(texts, language), scope=scope, language_code=language)
        default = app.bot_data.settings.default_language
        await app.bot.set_my_commands(bot_commands(texts, default), scope=scope)
    except TelegramError as error:
        # The menu is a convenience; the bot works without it and tries again at the next start.
        log.warning("could not publish the command menu: %s", type(error).__name__)
