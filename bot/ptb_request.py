"""python-telegram-bot's transport for direct replies, over aiohttp instead of httpx.

Measured on the alert-latency benchmark, PTB's httpx transport took about a third of the bot's CPU per
update; aiohttp's client costs a fraction of that (bot/runtime/telegram_api.py,
shared/PERF-NOTES.md). Errors are mapped to PTB's own exceptions so handlers see what they would see
with the default transport.
"""

from __future__ import annotations

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from bot.runtime.proxy import connector
from bot.settings import SecretStr


class AiohttpRequest(BaseRequest):
    """One aiohttp session for every request python-telegram-bot makes."""

    def __init__(
        self,
        token: SecretStr,
        *,
        connections: int = 64,
        read_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        proxy_url: SecretStr | None = None,
    ) -> None:
        self._token = token
        self._proxy_url = proxy_url
        self._connections = connections
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        """Return the default read timeout."""
        return self._read_timeout

    async def initialize(self) -> None:
        """Open the session."""
        if self._session is None or self._session.closed:
            pool = connector(self._proxy_url, limit=self._connections)
            self._session = aiohttp.ClientSession(connector=pool)

    async def shutdown(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
        write_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
        connect_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
        pool_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Make one request; return the status and body."""
        if self._session is None:
            await self.initialize()
        assert self._session is not None  # noqa: S101 - initialize() just opened it
        timeout = aiohttp.ClientTimeout(
            sock_read=read_timeout if isinstance(read_timeout, int | float) else self._read_timeout,
            sock_connect=connect_timeout
            if isinstance(connect_timeout, int | float)
            else self._connect_timeout,
        )
        body: aiohttp.FormData | bytes | None = None
        headers = {"User-Agent": self.USER_AGENT}
        if request_data is not None:
            files = request_data.multipart_data
            if files:
                form = aiohttp.FormData()
                for name, value in request_data.json_parameters.items():
                    form.add_field(name, value)
                for name, (filename, content, mimetype) in files.items():
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                body = form
            else:
                body = request_data.json_payload
                headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as response:
                return response.status, await response.read()
        except TimeoutError as error:
            raise TimedOut from error
        except aiohttp.ClientError as error:
            # The URL carries the token; aiohttp puts it in some messages.
            text = f"aiohttp.{type(error).__name__}: {error}".replace(
                self._token.get_secret_value(), "<token>"
            )
            raise NetworkError(text) from None
