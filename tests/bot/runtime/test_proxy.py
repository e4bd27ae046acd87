"""The connector behind every Bot API client: direct, or tunnelled through JARCHY_PROXY_URL; a proxy that
cannot be reached is a request not sent, with no password in what is raised."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp_socks import ProxyConnector, ProxyType
from telegram.error import NetworkError
from telegram.request import RequestData

from bot.logs import RedactSecrets
from bot.ptb_request import AiohttpRequest
from bot.runtime.proxy import connector, proxy_secrets
from bot.runtime.telegram_api import NotSent, TelegramApi
from bot.settings import SecretStr
from tests.support.settings import TEST_TOKEN, free_port


async def test_without_a_proxy_the_pool_is_aiohttps_own() -> None:
    pool = connector(None, limit=7)
    try:
        assert type(pool) is aiohttp.TCPConnector and pool.limit == 7
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("url", "kind", "tls"),
    [
        ("socks5://jarchy:p%40ss@proxy.example.org:1080", ProxyType.SOCKS5, False),
        ("http://proxy.example.org:3128", ProxyType.HTTP, False),
        ("https://jarchy:p%40ss@proxy.example.org:443", ProxyType.HTTP, True),
    ],
)
async def test_a_proxy_keeps_the_pool_size_and_resolves_names_itself(
    url: str, kind: ProxyType, tls: bool
) -> None:
    pool = connector(SecretStr(url), limit=5, enable_cleanup_closed=True)
    try:
        assert isinstance(pool, ProxyConnector) and pool.limit == 5
        assert (pool._proxy_type, pool._rdns, pool._proxy_ssl is not None) == (kind, True, tls)
        if "@" in url:
            assert (pool._proxy_username, pool._proxy_password) == ("jarchy", "p@ss")
    finally:
        await pool.close()


def test_both_spellings_of_the_password_are_redacted() -> None:
    assert proxy_secrets(SecretStr("socks5://jarchy:p%40ss@proxy.example.org:1080")) == ["p%40ss", "p@ss"]
    assert proxy_secrets(SecretStr("http://proxy.example.org:3128")) == []
    assert proxy_secrets(None) == []


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_proxy_that_is_down_means_not_sent(scheme: str) -> None:
    proxy = SecretStr(f"{scheme}://jarchy:hunter2@127.0.0.1:{free_port()}")
    api = TelegramApi("http://127.0.0.1:9", SecretStr(TEST_TOKEN), proxy_url=proxy)
    try:
        with pytest.raises(NotSent) as raised:
            await api.call("getMe", {})
        assert "hunter2" not in str(raised.value) and TEST_TOKEN not in str(raised.value)
    finally:
        await api.close()
    request = AiohttpRequest(SecretStr(TEST_TOKEN), proxy_url=proxy)
    try:
        with pytest.raises(NetworkError) as failed:
            await request.do_request(f"http://127.0.0.1:9/bot{TEST_TOKEN}/getMe", "POST", RequestData())
        assert "hunter2" not in str(failed.value) and TEST_TOKEN not in str(failed.value)
    finally:
        await request.shutdown()


def test_the_log_filter_redacts_the_proxy_password_in_both_spellings() -> None:
    proxy = SecretStr("socks5://jarchy:p%40ss-w0rd@proxy.example.org:1080")
    redact = RedactSecrets([TEST_TOKEN, *proxy_secrets(proxy)])
    scrubbed = redact.scrub("proxy refused: socks5://jarchy:p%40ss-w0rd@proxy.example.org:1080 (p@ss-w0rd)")
    assert "p%40ss-w0rd" not in scrubbed and "p@ss-w0rd" not in scrubbed
    assert "proxy.example.org:1080" in scrubbed
