"""Webhook mode: Telegram posts each update to the bot's own web server, which stores it in the durable inbox
and only then answers 200.

Telegram sends an update again when it gets no 2xx (or no answer within about a minute), so the answer
means "it is on our disk": a request refused or failed here is not lost, it comes back. A request without
the secret Telegram was given in setWebhook is refused with 403 before its body is read, and nothing of it
is stored. The inbox row is the deduplication: an update sent again is answered 200 and not handled twice.

Endpoints: the webhook path (from JARCHY_WEBHOOK_URL), `/healthz` (the process is up), `/readyz` (the
database answers and Telegram has the webhook: a load balancer sends traffic only then).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from bot.runtime.inbox import ALLOWED_UPDATES, FatalPollingError
from bot.runtime.telegram_api import NotSent, OutcomeUnknown, TelegramApi
from bot.security import DataKey
from bot.settings import Settings
from storage.database import Database

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - the header's name, not a secret
# An update is a few kilobytes (a file arrives as its file_id, never its bytes); a megabyte is far above
# anything Telegram sends and keeps a forged body from filling memory.
MAX_BODY_BYTES = 1 << 20
# Telegram's default; each connection is one update being written to the inbox.
MAX_CONNECTIONS = 40
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
_RETRY_CAP_S = 30.0
_REFUSAL_LOG_EVERY_S = 60.0


def webhook_secret(settings: Settings, key: DataKey) -> str:
    """The secret Telegram sends with every request: the configured one, else one derived from the data
    key (so every instance that shares the key knows it, and it survives restarts without a setting)."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value()
    return base64.urlsafe_b64encode(key.derive("webhook.secret")).decode().rstrip("=")


def webhook_path(url: str) -> str:
    """The path Telegram posts to, as the reverse proxy passes it on."""
    return urlsplit(url).path or "/"


class UpdateSink(Protocol):
    """Where accepted updates go: the durable inbox (bot.runtime.inbox.DurableInbox)."""

    async def accept(self, update: dict[str, Any]) -> bool:
        """Store an update; return False if it was there already."""
        ...


class WebhookServer:
    """The aiohttp server that takes Telegram's requests into the inbox."""

    def __init__(
        self,
        *,
        inbox: UpdateSink,
        db: Database,
        secret: str,
        path: str,
        listen: tuple[str, int],
        refusal_log_every_s: float = _REFUSAL_LOG_EVERY_S,
    ) -> None:
        if path in (HEALTH_PATH, READY_PATH):
            raise ValueError(f"the webhook path {path} is taken by a health endpoint")
        self._inbox = inbox
        self._db = db
        self._secret = secret.encode()
        self._path = path
        self._listen = listen
        self._runner: web.AppRunner | None = None
        self.webhook_set = False
        self._refusal_log_every_s = refusal_log_every_s
        self._refusals_logged_at = -refusal_log_every_s
        self._refusals_unlogged = 0
        self._refusals_flush: asyncio.TimerHandle | None = None

    def application(self) -> web.Application:
        """The web application: the webhook and the two health endpoints."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(self._path, self._receive)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get(READY_PATH, self._ready)
        return app

    async def start(self) -> None:
        """Listen; Telegram's requests are taken from now on."""
        # Quiet access log: every request would otherwise log a line per update, and its path and timing.
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._listen[0], self._listen[1])
        await site.start()
        self._runner = runner
        log.info("webhook server listening on %s:%d", *self._listen)

    async def stop(self) -> None:
        """Stop taking requests (Telegram keeps what comes meanwhile and sends it again)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._flush_refusals()  # a burst just before the stop is in the log too

    async def _receive(self, request: web.Request) -> web.Response:
        # Checked before the body is read: a forged request costs no parsing and leaves nothing behind.
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            self._log_refusal()
            return web.Response(status=403)
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.Response(status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413)
        update = _update_of(body)
        if update is None:
            # Nothing Telegram would send: answering 400 does not make it send it again.
            return web.Response(status=400)
        try:
            # A resend (False) is answered 200 like a new update: it is on disk, and handled once.
            await self._inbox.accept(update)
        except Exception:
            # Not stored: an error answer makes Telegram send the update again later.
            log.exception("could not store update %s; Telegram will send it again", update["update_id"])
            return web.Response(status=503)
        return web.Response(status=200)

    def _log_refusal(self) -> None:
        # One line a minute at most: whoever sends forged requests must not be able to fill the log. What
        # is counted meanwhile is logged when the minute is over (or at stop), not only at a later refusal:
        # a burst always shows.
        self._refusals_unlogged += 1
        wait = self._refusals_logged_at + self._refusal_log_every_s - time.monotonic()
        if wait <= 0:
            self._flush_refusals()
        elif self._refusals_flush is None:
            self._refusals_flush = asyncio.get_running_loop().call_later(wait, self._flush_refusals)

    def _flush_refusals(self) -> None:
        if self._refusals_flush is not None:
            self._refusals_flush.cancel()
            self._refusals_flush = None
        if self._refusals_unlogged:
            log.warning("refused %d webhook request(s) without the right secret", self._refusals_unlogged)
            self._refusals_logged_at, self._refusals_unlogged = time.monotonic(), 0

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ready(self, _request: web.Request) -> web.Response:
        if not self.webhook_set:
            return web.Response(status=503, text="the webhook is not set yet\n")
        try:
            async with asyncio.timeout(5):
                await self._db.ping()
        except Exception:
            return web.Response(status=503, text="the database does not answer\n")
        return web.Response(text="ready\n")


def _update_of(body: bytes) -> dict[str, Any] | None:
    try:
        update = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: a body nested deeper than the parser's stack (200,000 `[`), nothing Telegram sends.
        return None
    if not isinstance(update, dict):
        return None
    update_id = update.get("update_id")
    # Past 64 bits no column can store it: answered 400, not 503 for Telegram to resend forever.
    if not isinstance(update_id, int) or isinstance(update_id, bool) or not 0 <= update_id < 2**63:
        return None
    return update


async def keep_webhook_set(api: TelegramApi, settings: Settings, secret: str, server: WebhookServer) -> None:
    """Tell Telegram where to post, retrying while it cannot be reached; return once it is set.

    A token Telegram refuses, or a URL or secret it will not take, stops the bot (FatalPollingError): no
    retry would change the answer."""
    params = {
        "url": settings.webhook_url,
        "secret_token": secret,
        "allowed_updates": list(ALLOWED_UPDATES),
        "max_connections": MAX_CONNECTIONS,
        # What Telegram holds (sent while the bot was down, or before the switch from polling) is wanted.
        "drop_pending_updates": False,
    }
    backoff = 1.0
    while True:
        try:
            result = await api.call("setWebhook", params)
        except (NotSent, OutcomeUnknown) as error:
            log.warning("setWebhook failed (%s); trying again in %.0f s", error, backoff)
        else:
            if result.ok:
                server.webhook_set = True
                log.info("Telegram posts updates to %s", _without_query(settings.webhook_url))
                return
            if result.error_code in (401, 404):
                raise FatalPollingError("Telegram rejected the bot token (401); check JARCHY_BOT_TOKEN")
            if result.error_code == 400:
                raise FatalPollingError(
                    f"Telegram refused the webhook ({result.description}); check JARCHY_WEBHOOK_URL "
                    "(https, port 443, 80, 88 or 8443) and JARCHY_WEBHOOK_SECRET"
                )
            log.warning("setWebhook failed (%s); trying again in %.0f s", result.error_code, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _RETRY_CAP_S)


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
