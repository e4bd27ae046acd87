"""A lean Bot API client for the delivery worker and the poller: one httpx session, JSON in, JSON out.

python-telegram-bot's Bot builds full objects for every answer; the outbox needs only `ok`, the message id
and the error fields, at up to a thousand sends a second (shared/PERF-NOTES.md), and the poller needs the
raw update JSON to store it. Handlers keep using python-telegram-bot for replies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from bot.settings import SecretStr

_JSON = {"content-type": "application/json"}


class OutcomeUnknown(Exception):
    """The request left but no answer came: Telegram may or may not have acted on it."""


class NotSent(Exception):
    """The request never reached Telegram (connection refused, DNS, pool exhausted)."""


@dataclass(frozen=True)
class ApiResult:
    """Telegram's answer, reduced to what the callers act on."""

    ok: bool
    result: Any = None
    error_code: int | None = None
    description: str = ""
    retry_after: float | None = None

    @property
    def message_id(self) -> int | None:
        """Return the id of the message Telegram created, if any."""
        if isinstance(self.result, dict):
            value = self.result.get("message_id")
            return value if isinstance(value, int) else None
        return None


class TelegramApi:
    """Posts Bot API methods as JSON; never logs the token-bearing URL."""

    def __init__(
        self,
        api_url: str,
        token: SecretStr,
        *,
        connections: int = 8,
        timeout: float = 20.0,
    ) -> None:
        self._token = token
        self._client = httpx.AsyncClient(
            base_url=f"{api_url}/bot{token.get_secret_value()}/",
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        read_timeout: float | None = None,
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> ApiResult:
        """Call one method; raises OutcomeUnknown or NotSent, otherwise returns Telegram's answer."""
        try:
            if files:
                # Multipart: parameters as form fields, nested values JSON-encoded as Telegram expects.
                data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
                response = await self._client.post(
                    method,
                    data=data,
                    files=files,
                    timeout=read_timeout if read_timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            else:
                body = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()
                response = await self._client.post(
                    method,
                    content=body,
                    headers=_JSON,
                    timeout=read_timeout if read_timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise NotSent(self._scrub(error)) from None
        except (
            httpx.TimeoutException,
            httpx.RemoteProtocolError,
            httpx.ReadError,
            httpx.WriteError,
        ) as error:
            raise OutcomeUnknown(self._scrub(error)) from None
        return _parse(response)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _scrub(self, error: Exception) -> str:
        text = f"{type(error).__name__}: {error}"
        return text.replace(self._token.get_secret_value(), "<token>")


def _parse(response: httpx.Response) -> ApiResult:
    try:
        body = response.json()
    except ValueError:
        return ApiResult(ok=False, error_code=response.status_code, description=response.text[:200])
    if not isinstance(body, dict):
        return ApiResult(ok=False, error_code=response.status_code, description="malformed answer")
    if body.get("ok"):
        return ApiResult(ok=True, result=body.get("result"))
    parameters = body.get("parameters") or {}
    retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
    return ApiResult(
        ok=False,
        error_code=int(body.get("error_code") or response.status_code),
        description=str(body.get("description", ""))[:300],
        retry_after=float(retry_after) if retry_after is not None else None,
    )
