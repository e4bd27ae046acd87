"""The server core: the aiohttp app, routing of /bot<token>/<method>, the call log and error rendering."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import typedefs as web_typedefs
from aiohttp import web

from .files import FilesMixin
from .limits import LimitsMixin
from .state import Signal
from .wire import (
    PLAIN_TEXT_STATUSES,
    RATE_LIMITED_METHODS,
    WRITE_METHODS,
    ApiCall,
    ApiError,
    Handler,
    JSONDict,
    UploadedFile,
    bad,
    error_payload,
    normalise,
)

__all__ = ["ApiCall", "ServerCore"]

_MAX_UPLOAD: Final = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A supported Bot API method."""

    name: str
    handler: Handler
    rate_limited: bool
    writes: bool


class ServerCore(LimitsMixin, FilesMixin):
    """Serve the Bot API over HTTP on 127.0.0.1, dispatch each call to its concern and record it."""

    def _setup_state(self) -> None:
        """Build the method table once every concern has added its methods."""
        super()._setup_state()
        self._runner: web.AppRunner | None = None
        self._methods = {
            name.lower(): MethodSpec(name, handler, name in RATE_LIMITED_METHODS, name in WRITE_METHODS)
            for name, handler in self._handlers().items()
        }
        # Called with every request as it arrives, before it is answered (while its connection is open):
        # tests/e2e/test_proxy.py asks the OS which process holds the other end.
        # It may return an awaitable, awaited before the request is handled (slow work kept off the loop,
        # which the bot under test shares).
        self.on_request: Callable[[web.BaseRequest], Awaitable[None] | None] | None = None
        # Bots whose tokens this server answers too, by token (serve_also), and the server serving this
        # bot when it is one of those: Telegram serves every bot at one address.
        self._also: dict[str, ServerCore] = {}
        self._host: ServerCore | None = None

    def _handlers(self) -> dict[str, Handler]:
        """Answer the methods about the bot itself."""
        return {**super()._handlers(), "getMe": self._get_me, "logOut": self._true, "close": self._true}

    async def _true(self, p: JSONDict) -> bool:
        """Accept a method that has no observable effect here."""
        return True

    async def _get_me(self, p: JSONDict) -> JSONDict:
        """Describe the bot."""
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    # ------------------------------------------------------------------ the token's fate

    def revoke(self) -> None:
        """Revoke the bot's token: every method and file download answers 401 Unauthorized until restore().

        This is what Telegram answers once the owner revokes the token in @BotFather or deletes the bot.
        A long poll waiting when this is called ends at once with that 401 (see _get_updates), and the
        webhook pusher stops posting, as Telegram stops delivering to a revoked bot.
        """
        self.revoked = True
        self._updates_signal.notify()

    def restore(self) -> None:
        """Undo revoke(): the token works again, with the bot's state (queue, chats, offsets) untouched."""
        self.revoked = False
        self._updates_signal.notify()

    # ------------------------------------------------------------------ several bots at one address

    def serve_also(self, other: ServerCore) -> None:
        """Answer `other`'s token at this server's address too, with `other`'s own state.

        Requests to /bot<other.token>/... and /file/bot<other.token>/... go to `other`, which records them
        in its own `calls` and keeps its own queue, chats, limits, faults and webhook. `other` is never
        started itself: this server gives it its `url` and loop-bound events and stops its concerns on
        stop(). May be called before or after start().
        """
        if other is self or other.token == self.token:
            raise ValueError("a bot cannot be served alongside itself or a bot with the same token")
        if other._runner is not None:
            raise RuntimeError("the other bot runs its own server; stop it first")
        if other._host is not None and other._host is not self:
            raise RuntimeError("the other bot is already served by another FakeBotApi")
        if other.token in self._also and self._also[other.token] is not other:
            raise ValueError(f"another bot with token {other.token!r} is already served here")
        self._also[other.token] = other
        other._host = self
        if self._runner is not None:
            # Already running in this loop: wire it now; otherwise start() does it.
            other._bind_loop()
            other.url = self.url

    # ------------------------------------------------------------------ lifecycle

    def _bind_loop(self) -> None:
        """Create the events and signals that handlers wait on, for the loop about to serve this bot."""
        # Events bind to the loop that first waits on them, so a restart in a new loop needs fresh ones.
        self._closing = asyncio.Event()
        self._updates_signal = Signal()
        self._calls_signal = Signal()

    def _wake_for_stop(self) -> None:
        """End every wait of this bot's handlers at once: long polls, stalls, request delays."""
        self._closing.set()
        self._updates_signal.notify()

    async def start(self, port: int = 0) -> None:
        """Listen on `port` of 127.0.0.1 (default: a free one) and set `url`."""
        if self._runner is not None:
            raise RuntimeError("FakeBotApi is already running")
        if self._host is not None:
            raise RuntimeError("this bot is served by another FakeBotApi (serve_also); start that one")
        self._bind_loop()
        for other in self._also.values():
            other._bind_loop()
        app = web.Application(client_max_size=_MAX_UPLOAD, middlewares=[self._observe])
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        # Handlers only sleep while watching _closing, so a short shutdown timeout never cuts real work.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        for other in self._also.values():
            other.url = self.url

    async def stop(self) -> None:
        """Answer in-flight requests at once and close the server."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._wake_for_stop()
        for other in self._also.values():
            other._wake_for_stop()
        await self._stop_concerns()
        for other in self._also.values():
            await other._stop_concerns()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.stop()

    # ------------------------------------------------------------------ observing the bot

    def sent(self, method: str | None = None, chat_id: int | str | None = None) -> list[ApiCall]:
        """Return the successful calls, optionally only of one method and/or chat."""
        name = None if method is None else self._canonical(method)
        return [
            call
            for call in self.calls
            if call.status == 200
            and (name is None or call.method == name)
            and (chat_id is None or call.params.get("chat_id") == chat_id)
        ]

    async def wait_for(
        self,
        method: str,
        *,
        chat_id: int | str | None = None,
        count: int = 1,
        timeout: float = 5.0,
        predicate: Callable[[ApiCall], bool] | None = None,
    ) -> list[ApiCall]:
        """Wait until at least `count` matching successful calls exist and return all of them."""
        name = self._canonical(method)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        matches: list[ApiCall] = []
        scanned = 0
        while True:
            calls = self.calls
            if len(calls) < scanned:
                # Someone cleared `calls`; rescanning from scratch is the only consistent view.
                matches, scanned = [], 0
            # Only calls that arrived since the last wake-up are examined, so long waits stay linear.
            for call in calls[scanned:]:
                if (
                    call.status == 200
                    and call.method == name
                    and (chat_id is None or call.params.get("chat_id") == chat_id)
                    and (predicate is None or predicate(call))
                ):
                    matches.append(call)
            scanned = len(calls)
            if len(matches) >= count:
                return matches
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._describe_wait(name, chat_id, count, len(matches), timeout))
            await self._calls_signal.wait(remaining)

    # ------------------------------------------------------------------ HTTP plumbing

    @web.middleware
    async def _observe(self, request: web.Request, handler: web_typedefs.Handler) -> web.StreamResponse:
        """Show each request to `on_request` first."""
        if self.on_request is not None:
            pending = self.on_request(request)
            if pending is not None:
                await pending
        return await handler(request)

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        """Dispatch /bot<token>/<method> like Telegram."""
        other = self._also.get(request.match_info["token"])
        if other is not None:
            # Before the body is read: the other bot reads it, applies its own delay and records the call.
            return await other._handle_api(request)
        requested = request.match_info["method"]
        spec = self._methods.get(requested.lower())
        method = spec.name if spec else requested
        try:
            params = await self._read_params(request)
        except ApiError as exc:
            return self._answer(
                method, {}, self.clock(), exc.status, error_payload(exc.status, exc.description)
            )
        except ValueError as exc:
            # aiohttp rejects malformed multipart bodies with ValueError; Telegram answers those with 400.
            return self._answer(method, {}, self.clock(), 400, error_payload(400, f"Bad Request: {exc}"))
        if self.request_delay > 0:
            await self._sleep(self.request_delay)
        at = self.clock()
        if request.match_info["token"] != self.token or self.revoked:
            # Telegram checks the token before the method, so a revoked one gets 401 even for unknown names.
            return self._answer(method, params, at, 401, error_payload(401, "Unauthorized"))
        if spec is None:
            return self._answer(method, params, at, 404, error_payload(404, "Not Found"))

        key = requested.lower()
        faults = self._faults.get(key)
        if faults:
            fault = faults.popleft()
            return self._answer(method, params, at, fault.status, self._fault_payload(fault))

        stalls = self._stalls.get(key)
        if stalls and not stalls[0].deliver:
            lost = stalls.popleft()
            # The request is "lost on the way": Telegram never sees it, the client just hears nothing.
            payload = error_payload(504, "Gateway Timeout")
            self._record(method, params, at, 504, payload)
            await self._sleep(lost.delay)
            return self._render(504, payload)

        target: int | None = None
        if spec.writes and (self._chat_outages or self._group_rule or self._private_rule):
            target = self._target_chat(params)
            outage = None if target is None else self._chat_outages.get(target)
            if outage is not None:
                # The gateway answers for Telegram, so an outage enters no flood window.
                return self._answer(method, params, at, outage.status, self._fault_payload(outage))
        retry = self._admit(at, target) if spec.rate_limited else None
        if retry is not None:
            # A stall stays queued for the next admitted request: a 429 is an answer, not a lost one.
            payload = error_payload(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
            return self._answer(method, params, at, 429, payload)
        stall = stalls.popleft() if stalls else None

        try:
            payload = {"ok": True, "result": await spec.handler(params)}
            status = 200
        except ApiError as exc:
            status = exc.status
            payload = error_payload(status, exc.description, exc.parameters)
        except Exception as exc:
            # A crash in the fake must surface in the test, not as a bare aiohttp 500 page.
            self.server_errors.append(exc)
            status = 500
            payload = error_payload(500, f"Internal Server Error: FakeBotApi crashed: {exc!r}")
        if stall is None:
            return self._answer(method, params, at, status, payload)
        self._record(method, params, at, status, payload)
        await self._sleep(stall.delay)
        return self._render(status, payload)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        """Serve the bytes behind a file_path handed out by getFile."""
        other = self._also.get(request.match_info["token"])
        if other is not None:
            return await other._handle_file(request)
        file_path = request.match_info["file_path"]
        params: JSONDict = {"file_path": file_path}
        if self.request_delay > 0:
            await self._sleep(self.request_delay)
        at = self.clock()
        if request.match_info["token"] != self.token or self.revoked:
            return self._answer("downloadFile", params, at, 401, error_payload(401, "Unauthorized"))
        stored = self._files_by_path.get(file_path)
        if stored is None:
            return self._answer("downloadFile", params, at, 404, error_payload(404, "Not Found"))
        self._record(
            "downloadFile", params, at, 200, {"ok": True, "result": {"file_size": len(stored.content)}}
        )
        return web.Response(body=stored.content, content_type=stored.mime_type or "application/octet-stream")

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        """Answer paths outside the Bot API with Telegram's JSON 404."""
        params: JSONDict = {"path": request.path}
        return self._answer("unknown", params, self.clock(), 404, error_payload(404, "Not Found"))

    async def _read_params(self, request: web.Request) -> JSONDict:
        """Merge query string and body (JSON, urlencoded or multipart) into one normalised dict."""
        raw: dict[str, Any] = dict(request.query) if request.query_string else {}
        uploads: dict[str, UploadedFile] = {}
        if request.body_exists:
            content_type = request.content_type
            if content_type == "application/json":
                try:
                    body = json.loads(await request.read())
                except ValueError as exc:
                    raise bad("can't parse JSON object") from exc
                if not isinstance(body, dict):
                    raise bad("JSON object expected")
                raw.update(body)
            elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        # Closing matters: big parts spill into temp files that warn when collected.
                        with value.file:
                            uploads[key] = UploadedFile(value.filename, value.content_type, value.file.read())
                    elif isinstance(value, bytes | bytearray):
                        raw[key] = value.decode("utf-8", "replace")
                    else:
                        raw[key] = value
        params = normalise(raw)
        if uploads:
            for key, value in params.items():
                if isinstance(value, str) and value.startswith("attach://"):
                    attached = uploads.get(value.removeprefix("attach://"))
                    if attached is not None:
                        params[key] = attached
            for key, upload in uploads.items():
                params.setdefault(key, upload)
        return params

    def _record(self, method: str, params: JSONDict, at: float, status: int, payload: JSONDict) -> None:
        """Append a call to the log and wake whoever waits for it."""
        self.calls.append(ApiCall(method, params, at, status, payload))
        if status == 429:
            self.received_429 += 1
            raw = params.get("chat_id")
            chat_id = self._channel_ids.get(raw.lower()) if isinstance(raw, str) else raw
            if isinstance(chat_id, int):
                self.received_429_by_chat[chat_id] = self.received_429_by_chat.get(chat_id, 0) + 1
        self._calls_signal.notify()

    @staticmethod
    def _render(status: int, payload: JSONDict) -> web.Response:
        """Serialise an answer; gateway errors come as plain text like Telegram's nginx sends them."""
        plain = PLAIN_TEXT_STATUSES.get(status)
        if plain is not None:
            return web.Response(status=status, text=plain)
        return web.Response(
            status=status,
            body=json.dumps(payload, ensure_ascii=False).encode(),
            content_type="application/json",
        )

    def _answer(
        self, method: str, params: JSONDict, at: float, status: int, payload: JSONDict
    ) -> web.Response:
        """Record a call and build its HTTP answer."""
        self._record(method, params, at, status, payload)
        return self._render(status, payload)

    async def _sleep(self, delay: float) -> None:
        """Sleep, but return at once when the server stops so shutdown never waits for a stall."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    def _canonical(self, method: str) -> str:
        """Map any capitalisation of a method name to the Bot API spelling."""
        spec = self._methods.get(method.lower())
        return spec.name if spec else method

    def _describe_wait(
        self, method: str, chat_id: int | str | None, count: int, found: int, timeout: float
    ) -> str:
        """Explain a failed wait_for with the most recent traffic."""
        target = "" if chat_id is None else f" to chat {chat_id}"
        lines = [
            f"waited {timeout:.1f}s for {count} successful {method} call(s){target}, found {found}; "
            f"{len(self.calls)} call(s) in total, most recent last:"
        ]
        for call in self.calls[-15:]:
            detail = "" if call.ok else f" ({call.response.get('description', '')})"
            text = call.params.get("text")
            snippet = f" text={text[:40]!r}" if isinstance(text, str) else ""
            lines.append(
                f"  {call.method} chat_id={call.params.get('chat_id')!r}{snippet} -> {call.status}{detail}"
            )
        if not self.calls:
            lines.append("  (no calls at all: is the bot pointed at this server?)")
        return "\n".join(lines)
