"""A lean Bot API client for the delivery worker and the poller: one aiohttp session, JSON in, JSON out.

python-telegram-bot's Bot builds full objects for every answer; the outbox needs only `ok`, the message id
and the error fields, at up to a thousand sends a second, and the poller needs the raw update JSON to store
it. Measured with bench/outbox_throughput.py on a 2-core machine, httpx (which PTB uses) peaked near 1,000
msg/s with 2 connections and fell as connections were added (its pool scans every connection per request,
shared/PERF-NOTES.md); aiohttp's pool does not. Handlers keep using python-telegram-bot for their replies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.runtime.proxy import connector
from bot.settings import SecretStr

_JSON = {"content-type": "application/json"}


class OutcomeUnknown(Exception):
    """The request left but no answer came: Telegram may or may not have acted on it."""


class NotSent(Exception):
    """The request never reached Telegram (connection refused, DNS, no free connection)."""


@dataclass(frozen=True)
class ApiResult:
    """Telegram's answer, reduced to what the callers act on."""

    ok: bool
    result: Any = None
    error_code: int | None = None
    description: str = ""
    retry_after: float | None = None
    migrate_to_chat_id: int | None = None  # the group became a supergroup with this id

    @property
    def message_id(self) -> int | None:
        """Return the id of the message Telegram created, if any."""
        if isinstance(self.result, dict):
            value = self.result.get("message_id")
            return value if isinstance(value, int) else None
        return None


class TelegramApi:
    """Posts Bot API methods as JSON; never logs or raises the token-bearing URL."""

    def __init__(
        self,
        api_url: str,
        token: SecretStr,
        *,
        connections: int = 8,
        timeout: float = 20.0,
        proxy_url: SecretStr | None = None,
    ) -> None:
        self._token = token
        self._proxy_url = proxy_url
        self._base = f"{api_url}/bot{token.get_secret_value()}/"
        self._connections = connections
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        read_timeout: float | None = None,
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> ApiResult:
        """Call one method; raises OutcomeUnknown or NotSent, otherwise returns Telegram's answer."""
        session = self._open()
        timeout = aiohttp.ClientTimeout(
            sock_connect=10.0, sock_read=read_timeout if read_timeout is not None else self._timeout
        )
        body: aiohttp.FormData | bytes
        if files:
            # Multipart: parameters as form fields, nested values JSON-encoded as Telegram expects.
            form = aiohttp.FormData()
            for key, value in params.items():
                form.add_field(key, value if isinstance(value, str) else json.dumps(value))
            for key, (name, content) in files.items():
                form.add_field(key, content, filename=name)
            body, headers = form, None
        else:
            body, headers = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode(), _JSON
        try:
            async with session.post(
                self._base + method, data=body, headers=headers, timeout=timeout
            ) as response:
                raw = await response.read()
                return _parse(response.status, raw)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            raise NotSent(self._scrub(error)) from None
        except (TimeoutError, aiohttp.ClientError) as error:
            # Sent (or partly sent) with no complete answer: Telegram may have acted on it.
            raise OutcomeUnknown(self._scrub(error)) from None

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the running loop, not the one (if any) at construction.
        if self._session is None or self._session.closed:
            pool = connector(self._proxy_url, limit=self._connections, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=pool, raise_for_status=False)
        return self._session

    def _scrub(self, error: BaseException) -> str:
        text = f"{type(error).__name__}: {error}"
        return text.replace(self._token.get_secret_value(), "<token>")


def _parse(status: int, raw: bytes) -> ApiResult:
    try:
        body = json.loads(raw)
    except ValueError:
        return ApiResult(ok=False, error_code=status, description=raw[:200].decode(errors="replace"))
    if not isinstance(body, dict):
        return ApiResult(ok=False, error_code=status, description="malformed answer")
    if body.get("ok"):
        return ApiResult(ok=True, result=body.get("result"))
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        parameters = {}
    retry_after = parameters.get("retry_after")
    migrate_to = parameters.get("migrate_to_chat_id")
    return ApiResult(
        ok=False,
        error_code=int(body.get("error_code") or status),
        description=str(body.get("description", ""))[:300],
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        migrate_to_chat_id=migrate_to if isinstance(migrate_to, int) else None,
    )
