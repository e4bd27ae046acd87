"""Reach Telegram before the bot starts: wait out an outage with a capped backoff, stop on a refused token.

python-telegram-bot's `Application.initialize` asks getMe once and raises: a restart during an outage
would leave the network without its bot, and a refused token would end in a traceback that names it, with
the HTTP sessions left open. Here getMe is asked until Telegram answers; meanwhile the services open (the
database, its migrations) and the reminders keep being queued, so what falls due goes out once Telegram is
back. The inbox keeps what it holds and the outbox what is queued: both run as soon as the bot is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

from telegram.error import InvalidToken, RetryAfter, TelegramError

from bot.context import JarchyApp
from bot.settings import Settings
from bot.wiring import Services, open_services

log = logging.getLogger(__name__)

FIRST_RETRY_S = 1.0


class TokenRefused(Exception):
    """Telegram answered 401 or 404 to getMe: the token is wrong or revoked, and no retry changes that."""

    def __init__(self, answer: str, api_url: str) -> None:
        super().__init__(
            f"JARCHY_BOT_TOKEN: {api_url} refuses this token ({answer}). Copy the bot's token from "
            "@BotFather (/mybots, then API Token) and set JARCHY_BOT_TOKEN to it; a revoked token stays "
            "refused."
        )


class BotSwitched(Exception):
    """While the token was refused at start, the bot in use changed (a backup took over): start again."""


# Called with the opened services whenever the token is refused at start; True: another bot is in use
# now. Only given when backup bots are configured: without one a refused token ends the start.
OnRefused = Callable[[Services], Awaitable[bool]]


def retry_delays(cap_s: float, first_s: float = FIRST_RETRY_S) -> Iterator[float]:
    """Yield the waits between tries: doubling from `first_s` up to `cap_s`, each shortened by up to a fifth.

    The jitter keeps several bots that lost Telegram at the same moment from all asking again together.
    """
    delay = min(first_s, cap_s)
    while True:
        yield delay * random.uniform(0.8, 1.0)  # noqa: S311 - spreading retries, not a secret
        delay = min(delay * 2, cap_s)


async def reach_telegram(
    app: JarchyApp, settings: Settings, stop: asyncio.Event, on_refused: OnRefused | None = None
) -> bool:
    """Initialise `app` once Telegram answers getMe; return False if `stop` was set first.

    Raises TokenRefused for a token Telegram refuses, unless `on_refused` is given: then the refusal is
    waited out like an outage while `on_refused` decides on a switch (BotSwitched when it made one).
    While it cannot be reached, the services are opened
    (post_init then finds them open) and the reminder pass runs; on any way out but success they are closed.
    """
    delays = retry_delays(settings.start_retry_max_s)
    bookkeeping: asyncio.Task[None] | None = None
    attempts = 0
    reached = False
    try:
        while True:
            attempts += 1
            try:
                reason, hint = await _initialise(app, settings)
            except TokenRefused:
                if on_refused is None:
                    raise
                if await on_refused(await _open_early(app)):
                    raise BotSwitched from None
                reason, hint = "the token is refused (401/404); a backup bot may take over", 0.0
            if reason is None:
                reached = True
                if attempts > 1:
                    log.info("Telegram answers at %s after %d tries; starting", where(settings), attempts)
                return True
            if bookkeeping is None:
                services = await _open_early(app)
                bookkeeping = asyncio.create_task(_keep_reminders(services), name="reminders-offline")
            delay = max(next(delays), hint)
            at = app.bot_data.clock.now() + timedelta(seconds=delay)
            log.warning(
                "Telegram is unreachable at %s (%s); next try in %.1f s, at %s UTC",
                where(settings),
                reason,
                delay,
                at.strftime("%H:%M:%S"),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                log.info("stopped while waiting for Telegram")
                return False
    finally:
        if bookkeeping is not None:
            bookkeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bookkeeping
        if not reached:
            services, app.bot_data.services = app.bot_data.services, None
            if services is not None:
                await services.close()


async def _initialise(app: JarchyApp, settings: Settings) -> tuple[str | None, float]:
    """Try `app.initialize()` (getMe); return None or why Telegram was not reached, and a wait it asked."""
    try:
        await app.initialize()
    except InvalidToken as error:
        # PTB's own message names the token; the server's answer is its cause ("Unauthorized", "Not Found").
        answer = getattr(error.__cause__, "message", "") or "Unauthorized"
        await _close_requests(app)
        raise TokenRefused(answer, where(settings)) from None
    except RetryAfter as error:
        await _close_requests(app)
        return "too many requests", error.retry_after.total_seconds() if isinstance(
            error.retry_after, timedelta
        ) else float(error.retry_after)
    except TelegramError as error:
        # NetworkError and TimedOut (bot.ptb_request scrubs the token from their text), or an answer
        # such as 502 from Telegram or a proxy in front of it: all may pass.
        await _close_requests(app)
        return error.message, 0.0
    except BaseException:
        await _close_requests(app)
        raise
    return None, 0.0


def where(settings: Settings) -> str:
    """Return the Bot API root as the operator set it, and the JARCHY_PROXY_URL it is reached through,
    less any credentials of either."""
    parts = urlsplit(settings.api_url)
    host = parts.netloc.rpartition("@")[2]
    root = f"{parts.scheme}://{host}{parts.path}"
    if settings.proxy_url is None:
        return root
    proxy = urlsplit(settings.proxy_url.get_secret_value())
    return f"{root} through the proxy {proxy.scheme}://{proxy.netloc.rpartition('@')[2]}"


async def _close_requests(app: JarchyApp) -> None:
    # Application.shutdown does nothing for an Application that never initialised, which is what left
    # aiohttp's "Unclosed client session" behind; the Bot closes its request sessions itself.
    await app.bot.shutdown()


async def _open_early(app: JarchyApp) -> Services:
    data = app.bot_data
    services: Services | None = data.services
    if services is None:
        services = data.services = await open_services(data.settings, data.clock, data.limiter)
    return services


async def _keep_reminders(services: Services) -> None:
    # Reminders are rows in the outbox: queued now, they are sent as soon as the delivery worker runs.
    while True:
        try:
            await services.hearings.materialise()
        except Exception:
            log.exception("the reminder pass failed while waiting for Telegram")
        await asyncio.sleep(services.settings.reminder_interval_s)
