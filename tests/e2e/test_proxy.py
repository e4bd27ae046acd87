"""JARCHY_PROXY_URL through a real proxy server (pproxy, from PyPI): a whole report, from /report to the
coordinators' card with its evidence file, reaches the fake Bot API only through the proxy.

Each request the fake receives is traced, while its connection is still open, to the process holding the
other end of the socket (Linux's /proc): it must be the proxy's, never the bot's own. Environment proxy
variables pointing elsewhere, and a NO_PROXY that names the fake's address, must change nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from asyncio.subprocess import PIPE, STDOUT
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from bot.runtime.telegram_api import NotSent, TelegramApi
from bot.settings import SecretStr
from messages import catalogs
from tests.e2e.test_evidence_flow import send_file, submit, walk_to_evidence
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import COORDINATORS, Person
from tests.support.settings import TEST_TOKEN, free_port, make_settings

T = catalogs()
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="traces sockets through /proc")


@dataclass
class ProxyServer:
    """A pproxy process listening on 127.0.0.1."""

    url: str
    process: asyncio.subprocess.Process
    output: list[str]


@pytest.fixture(params=["socks5-with-credentials", "http-with-credentials", "https-with-credentials", "http"])
async def proxy(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ProxyServer]:
    """Start pproxy with the scheme (and credentials) of the parameter; stop it after the test."""
    scheme = request.param.split("-")[0]
    port = free_port()
    credentials = "with-credentials" in request.param
    options: list[str] = []
    listen_scheme = scheme
    if scheme == "https":
        # TLS to the proxy: a certificate for 127.0.0.1 made here, trusted through SSL_CERT_FILE (which
        # ssl.create_default_context reads), so the bot verifies the proxy as it would a real one.
        cert, key = tmp_path / "proxy.pem", tmp_path / "proxy.key"
        await _self_signed(cert, key)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        options, listen_scheme = ["--ssl", f"{cert},{key}"], "http+ssl"
    # --auth 0: pproxy would otherwise let an address in without credentials once it has given them.
    listen = f"{listen_scheme}://127.0.0.1:{port}" + ("#jarchy:s3cret%pw" if credentials else "")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PPROXY_WITHOUT_UVLOOP,
        "-l",
        listen,
        *options,
        "--auth",
        "0",
        "-v",
        stdout=PIPE,
        stderr=STDOUT,
    )
    assert process.stdout is not None
    output: list[str] = []
    line = await asyncio.wait_for(process.stdout.readline(), timeout=15)
    assert b"Serving on" in line, line
    reader = asyncio.create_task(_collect(process.stdout, output))
    userinfo = "jarchy:s3cret%25pw@" if credentials else ""
    try:
        yield ProxyServer(f"{scheme}://{userinfo}127.0.0.1:{port}", process, output)
    finally:
        process.terminate()
        await process.wait()
        await reader


# pproxy installs uvloop when it can import it (jarchy depends on it), then asks for the loop in a way
# uvloop 0.22+ refuses; without uvloop it runs on asyncio's own loop, as it always has.
_PPROXY_WITHOUT_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; sys.argv[0] = 'pproxy'; from pproxy.server import main; main()"
)


async def _self_signed(cert: Path, key: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the https proxy's certificate")
    process = await asyncio.create_subprocess_exec(
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        stdout=PIPE,
        stderr=STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace").strip())


def _owner(request: web.BaseRequest, pids: dict[int, str]) -> str:
    """Name the process (among `pids`) that holds the client's end of this request's connection."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if peer is None or sock is None:
        return "no socket"
    wanted = (f"{peer[1]:04X}", f"{sock[1]:04X}")
    inode = ""
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if (fields[1].split(":")[1], fields[2].split(":")[1]) == wanted:
            inode = fields[9]
    if not inode:
        return "not found"
    for pid, name in pids.items():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return name
            except OSError:
                continue
    return "another process"


async def test_a_whole_report_reaches_telegram_only_through_the_proxy(
    fake: FakeBotApi, proxy: ProxyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    methods = await _report_through_the_proxy(fake, proxy, tmp_path, monkeypatch)
    assert methods["getUpdates"] > 0


async def test_in_webhook_mode_set_webhook_goes_through_the_proxy_too(
    fake: FakeBotApi, proxy: ProxyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not proxy.url.startswith("socks5://"):
        pytest.skip("one proxy is enough: the polling test covers the schemes")
    port = free_port()
    webhook = {"webhook_url": f"http://127.0.0.1:{port}/telegram", "webhook_listen": ("127.0.0.1", port)}
    methods = await _report_through_the_proxy(fake, proxy, tmp_path, monkeypatch, **webhook)
    assert methods["setWebhook"] > 0 and methods["getUpdates"] == 0


async def _report_through_the_proxy(
    fake: FakeBotApi,
    proxy: ProxyServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **settings_overrides: object,
) -> Counter[str]:
    """Run a whole report with the bot behind the proxy; check every request the fake saw came through
    it; return how many of each method (downloads as downloadFile) the fake saw."""
    # Were the environment honoured, requests would go to a closed port, or around the proxy.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    owners: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    pids = {proxy.process.pid: "proxy", os.getpid(): "bot"}

    async def trace(request: web.BaseRequest) -> None:
        # Reading /proc takes a while on a busy machine: in a thread, so the bot's loop (this loop) never
        # stalls on it (it did, holding an SQLite write until other writers gave up on the lock).
        owners[await asyncio.to_thread(_owner, request, pids)] += 1
        methods[request.path.rsplit("/", 1)[-1] if "/file/" not in request.path else "downloadFile"] += 1

    fake.on_request = trace
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        coordinator_chat_id=COORDINATORS,
        proxy_url=SecretStr(proxy.url),
        **settings_overrides,
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        person = Person(fake, 901)
        await walk_to_evidence(fake, person, story="Detained at the court house.")
        answer = await send_file(fake, person, b"%PDF-1.4 a detention record", name="record.pdf")
        assert T.text("en", "report.step.evidence", count=1) in answer
        await submit(person)
        await fake.wait_for("sendDocument", chat_id=COORDINATORS, timeout=20)
        await fake.wait_for(
            "sendMessage",
            chat_id=COORDINATORS,
            timeout=20,
            predicate=lambda c: "court house" in c.params["text"],
        )
    finally:
        await bot.stop()
    # Every client took part: PTB's replies, the poller or the webhook setup, the delivery worker, the
    # download.
    for method in ("getMe", "sendMessage", "getFile", "downloadFile", "sendDocument"):
        assert methods[method] > 0, (method, methods)
    assert sum(owners.values()) >= len(fake.sent())
    assert owners == Counter({"proxy": sum(methods.values())}), owners
    tunnels = [line for line in proxy.output if f" -> 127.0.0.1:{fake.url.rsplit(':', 1)[1]}" in line]
    assert tunnels, proxy.output
    assert not [line for line in proxy.output if "Unauthorized" in line], proxy.output
    return methods


async def test_wrong_credentials_are_refused_by_the_proxy_and_nothing_reaches_telegram(
    fake: FakeBotApi, proxy: ProxyServer
) -> None:
    if "@" not in proxy.url:
        pytest.skip("this proxy asks for no credentials")
    wrong = SecretStr(proxy.url.replace("s3cret%25pw", "not-the-password"))
    api = TelegramApi(fake.url, SecretStr(TEST_TOKEN), proxy_url=wrong)
    try:
        with pytest.raises(NotSent) as raised:
            await api.call("getMe", {})
    finally:
        await api.close()
    assert "not-the-password" not in str(raised.value)
    assert fake.sent() == []
