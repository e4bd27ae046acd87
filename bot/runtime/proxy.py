"""The one place a connection to the Bot API is made: directly, or through JARCHY_PROXY_URL.

Every client that talks to Telegram (python-telegram-bot's requests, the delivery worker and poller, the
webhook setup, evidence downloads) builds its connector here, so none can go around the proxy.

aiohttp-socks' ProxyConnector is used for http, https and socks5 alike, rather than aiohttp's own
`proxy=` for http(s): the proxy lives in the connector, so no call site can forget to pass it; every
connection is a CONNECT (or SOCKS) tunnel, so a plain-http Bot API root (a reverse proxy, a local server)
is tunnelled as well; and the hostname is resolved by the proxy, not by a local resolver a censor may
poison. Sessions keep aiohttp's default trust_env=False: HTTP(S)_PROXY and NO_PROXY in the environment
never change where a request goes (NO_PROXY would otherwise send a loopback or LAN Bot API around it).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyConnector, ProxyError, ProxyTimeoutError, ProxyType

from bot.settings import SecretStr


def connector(proxy_url: SecretStr | None, *, limit: int, **options: Any) -> aiohttp.TCPConnector:
    """Return a connection pool of `limit` connections, tunnelled through the proxy if one is set."""
    if proxy_url is None:
        return aiohttp.TCPConnector(limit=limit, **options)
    parts = urlsplit(proxy_url.get_secret_value())
    scheme = parts.scheme.lower()
    assert parts.hostname is not None and parts.port is not None  # noqa: S101 - Settings checked the URL
    return _Tunnel(
        host=parts.hostname,
        port=parts.port,
        proxy_type=ProxyType.SOCKS5 if scheme == "socks5" else ProxyType.HTTP,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        # Names are resolved by the proxy: a poisoned local DNS answer for api.telegram.org does not matter.
        rdns=True,
        # https://: TLS to the proxy itself, then the tunnel (with its own TLS to an https Bot API) inside.
        proxy_ssl=ssl.create_default_context() if scheme == "https" else None,
        limit=limit,
        **options,
    )


class _Tunnel(ProxyConnector):
    """aiohttp-socks' connector, its failures raised as aiohttp's own connection errors.

    Its errors are plain Exceptions: uncaught, they would pass python-telegram-bot's NetworkError and the
    delivery worker's NotSent by. A proxy that is down, times out or refuses the tunnel (or the
    credentials, hanging up) never passed the request on, which is what ClientConnectorError means to both.
    """

    async def _wrap_create_connection(self, *args: Any, req: Any, **kwargs: Any) -> Any:
        try:
            return await super()._wrap_create_connection(*args, req=req, **kwargs)
        # A socks5 proxy that refuses the credentials may just hang up (EOFError); TLS to the Bot API
        # is set up inside the tunnel too (ssl.SSLError is an OSError).
        except (ProxyConnectionError, ProxyTimeoutError, ProxyError, EOFError, OSError) as error:
            reason = OSError(0, f"proxy: {type(error).__name__}: {error}")
            raise aiohttp.ClientProxyConnectionError(req.connection_key, reason) from None


def proxy_secrets(proxy_url: SecretStr | None) -> list[str]:
    """Return the proxy's password as written and decoded, for the log redaction filter."""
    password = urlsplit(proxy_url.get_secret_value()).password if proxy_url is not None else None
    return [password, unquote(password)] if password else []
