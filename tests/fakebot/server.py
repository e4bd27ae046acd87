"""Fake Telegram Bot API server that stands in for api.telegram.org in end-to-end tests and benchmarks."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import math
import mimetypes
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

JSONDict = dict[str, Any]
Handler = Callable[[JSONDict], Awaitable[Any]]

# Telegram counts these against flood control; the fake's rate limit applies to exactly this set.
RATE_LIMITED_METHODS: Final = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendVideo",
        "sendVoice",
        "sendAudio",
        "sendLocation",
        "sendMediaGroup",
        "copyMessage",
        "copyMessages",
        "forwardMessage",
        "editMessageText",
        "editMessageReplyMarkup",
        "editMessageCaption",
    }
)
# Methods that write into a chat: chat outages, migrations, deleted chats and a removed bot stop these.
_WRITE_METHODS: Final = RATE_LIMITED_METHODS | {
    "forwardMessages",
    "sendChatAction",
    "deleteMessage",
    "deleteMessages",
    "banChatMember",
    "unbanChatMember",
}

# Form and multipart bodies carry every value as a string; these are ids/counters the bot means as ints.
_INT_FIELDS: Final = frozenset(
    {
        "chat_id",
        "message_id",
        "from_chat_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "reply_to_message_id",
        "message_thread_id",
        "cache_time",
        "duration",
        "width",
        "height",
        "live_period",
        "heading",
        "proximity_alert_radius",
        "until_date",
    }
)
_FLOAT_FIELDS: Final = frozenset({"latitude", "longitude", "horizontal_accuracy"})
# User-visible text must never be reinterpreted, even when it happens to be valid JSON such as "[1]".
_FREE_TEXT_FIELDS: Final = frozenset(
    {
        "text",
        "caption",
        "data",
        "description",
        "short_description",
        "title",
        "name",
        "query",
        "explanation",
        "question",
        "address",
        "first_name",
        "last_name",
        "vcard",
        "file_name",
        "payload",
        "quote",
        "custom_title",
        "emoji",
        "url",
        "callback_query_id",
        "inline_message_id",
    }
)
# Telegram's default when allowed_updates is empty or never set.
_DEFAULT_EXCLUDED_UPDATES: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_MEDIA_KEYS: Final = ("photo", "document", "video", "voice", "audio", "animation", "video_note", "sticker")
# Keys describing a message's envelope rather than its content, so copies and forwards must not carry them.
_ENVELOPE_KEYS: Final = frozenset(
    {
        "message_id",
        "date",
        "chat",
        "from",
        "sender_chat",
        "edit_date",
        "reply_to_message",
        "reply_markup",
        "forward_origin",
        "is_automatic_forward",
        "author_signature",
        "via_bot",
        "media_group_id",
        "has_protected_content",
    }
)
_ERROR_PREFIXES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
}
_PLAIN_TEXT_STATUSES: Final = {502: "Bad Gateway", 504: "Gateway Timeout"}
_COMMAND_RE: Final = re.compile(r"/\S+")
_COMMAND_NAME_RE: Final = re.compile(r"[a-z0-9_]{1,32}")
_NOT_MODIFIED: Final = (
    "message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
_MAX_TEXT: Final = 4096
_MAX_CAPTION: Final = 1024
_MAX_DOWNLOAD: Final = 20 * 1024 * 1024
_MAX_UPLOAD: Final = 50 * 1024 * 1024
_MAX_CALLBACK_DATA: Final = 64  # bytes of UTF-8
_MAX_BUTTONS: Final = 100
# Telegram's flood windows: per group a minute, per private chat a second (or 1/rate for slower rates).
_GROUP_WINDOW: Final = 60.0
_PRIVATE_WINDOW: Final = 1.0
# Statuses kick_bot and restore_bot move the bot between.
_BOT_REMOVED_STATUSES: Final = frozenset({"kicked", "left", "restricted"})
_BOT_PRESENT_STATUSES: Final = frozenset({"administrator", "member"})
# ChatMember statuses a user can be given in a chat's member list, and those that make them a member.
_MEMBER_STATUSES: Final = frozenset({"creator", "administrator", "member", "restricted", "left", "kicked"})
_INSIDE_STATUSES: Final = frozenset({"creator", "administrator", "member", "restricted"})
_NO_RESTRICT_RIGHTS: Final = "not enough rights to restrict/unrestrict chat member"
_ADMIN_RIGHTS: Final = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)
_MEMBER_PERMISSIONS: Final = (
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_send_messages",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_manage_topics",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_edit_tag",
    "can_react_to_messages",
)
_FILE_FOLDERS: Final = {
    "photo": "photos",
    "document": "documents",
    "video": "videos",
    "voice": "voice",
    "audio": "music",
}


@dataclass(slots=True)
class ApiCall:
    """One request the bot made, with the answer the fake gave."""

    method: str
    params: JSONDict
    at: float
    status: int
    response: JSONDict

    @property
    def ok(self) -> bool:
        """Tell whether Telegram would have accepted the request."""
        return self.status == 200

    @property
    def result(self) -> Any:
        """Return the `result` field of the answer (None for errors)."""
        return self.response.get("result")


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file part of a multipart request, as found in ApiCall.params."""

    filename: str | None
    content_type: str
    content: bytes = field(repr=False)

    @property
    def size(self) -> int:
        """Return the number of bytes uploaded."""
        return len(self.content)


@dataclass(slots=True)
class StoredFile:
    """A file the fake can hand out through getFile and the file download route."""

    file_id: str
    file_unique_id: str
    file_path: str
    file_name: str
    mime_type: str | None
    content: bytes = field(repr=False)


class _ApiError(Exception):
    """Abort a method with a Telegram-style error answer."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def _bad(description: str) -> _ApiError:
    """Build a 400 error the way Telegram words it."""
    return _ApiError(400, f"Bad Request: {description}")


def _error_payload(status: int, description: str, parameters: JSONDict | None = None) -> JSONDict:
    """Build the JSON body of a failed call."""
    payload: JSONDict = {"ok": False, "error_code": status, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return payload


def _worded(status: int, description: str, default: str) -> str:
    """Word a fault's description the way Telegram would for its status."""
    prefix = _ERROR_PREFIXES.get(status) or _PLAIN_TEXT_STATUSES.get(status)
    if description == default:
        # The default wording only fits its own status; other statuses get Telegram's own phrase.
        return prefix or ("Internal Server Error" if status == 500 else description)
    if prefix and not description.startswith(prefix):
        return f"{prefix}: {description}"
    return description


def _normalise(raw: Mapping[str, Any]) -> JSONDict:
    """Turn form/query strings into the values a JSON body would have carried."""
    params: JSONDict = {}
    for key, value in raw.items():
        if type(value) is str and value:
            if key in _INT_FIELDS:
                with contextlib.suppress(ValueError):
                    value = int(value)
            elif key in _FLOAT_FIELDS:
                with contextlib.suppress(ValueError):
                    value = float(value)
            elif key not in _FREE_TEXT_FIELDS:
                first = value[0]
                if first in "[{":
                    with contextlib.suppress(ValueError):
                        value = json.loads(value)
                elif value == "true":
                    value = True
                elif value == "false":
                    value = False
        params[key] = value
    return params


def _utf16_len(text: str) -> int:
    """Measure text the way Telegram entity offsets do."""
    return len(text.encode("utf-16-le")) // 2


def _command_entities(text: str) -> list[JSONDict]:
    """Return the bot_command entity Telegram attaches to a leading /command."""
    match = _COMMAND_RE.match(text)
    if match is None:
        return []
    return [{"type": "bot_command", "offset": 0, "length": _utf16_len(match.group())}]


def _update_type(update: JSONDict) -> str:
    """Return the payload key of an update, e.g. "message"."""
    for key in update:
        if key != "update_id":
            return key
    return ""


def _scope_key(scope: Any) -> str:
    """Flatten a BotCommandScope into a stable dictionary key."""
    if not isinstance(scope, dict):
        return "default"
    parts = [str(scope.get("type", "default"))]
    parts.extend(str(scope[name]) for name in ("chat_id", "user_id") if name in scope)
    return ":".join(parts)


class _Signal:
    """Wake every current waiter at once; later waiters wait for the next notification."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._waiters = 0

    def notify(self) -> None:
        """Wake everyone waiting right now."""
        # Skipping the swap when nobody waits keeps the hot request path allocation-free.
        if self._waiters:
            self._event.set()
            self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Wait for the next notification or until `seconds` pass."""
        event = self._event
        self._waiters += 1
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._waiters -= 1


@dataclass(slots=True)
class _Fault:
    """One queued fail_next answer."""

    status: int
    description: str


@dataclass(slots=True)
class _Stall:
    """One queued timeout_next stall."""

    delay: float
    deliver: bool


@dataclass(frozen=True, slots=True)
class _Method:
    """A supported Bot API method."""

    name: str
    handler: Handler
    rate_limited: bool
    writes: bool


class FakeBotApi:
    """Local aiohttp server that answers Bot API calls like Telegram and records them."""

    # State is plain attributes mutated without locks, so add_* and the fault setters must run on the
    # event loop thread that serves requests (the test's own loop); that keeps the hot path cheap.

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",  # noqa: S107 - a fake token for a fake server
        *,
        bot_id: int = 123456,
        bot_username: str = "jarchy_test_bot",
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_user: JSONDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "Jarchy Test Bot",
            "username": bot_username,
        }
        self.url = ""

        self.calls: list[ApiCall] = []
        self.pending_updates: list[JSONDict] = []
        self.acknowledged_offset = 0
        self.received_429 = 0
        # The 429s of calls that named a chat, by numeric chat id (whichever window refused them).
        self.received_429_by_chat: dict[int, int] = {}
        # Monotonic clock behind ApiCall.at and every rate window; tests may swap it to step time.
        self.clock: Callable[[], float] = time.monotonic

        self.forbidden_chats: set[int] = set()
        self.request_delay = 0.0
        self.rate_limit_retry_after = 1
        self._rate_limit: float | None = None
        self._rate_window: deque[float] = deque()
        # (events admitted per window, window length in seconds), None while that limit is off.
        self._group_rule: tuple[int, float] | None = None
        self._private_rule: tuple[int, float] | None = None
        self._chat_retry_after: int | None = None
        # chat_id -> admission times inside the chat's current window, oldest first.
        self._chat_windows: dict[int, list[float]] = {}
        self._chat_outages: dict[int, _Fault] = {}
        self._migrations: dict[int, int] = {}
        self._deleted_chats: set[int] = set()
        # chat_id -> the status kick_bot gave the bot there, while it stops the bot's writes.
        self._bot_removals: dict[int, str] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._stalls: dict[str, deque[_Stall]] = {}

        self.my_commands: dict[str | None, list[JSONDict]] = {}
        self.my_commands_by_scope: dict[tuple[str, str | None], list[JSONDict]] = {}
        self.webhook_url: str | None = None
        self.left_chats: set[int] = set()
        # (chat_id, user_id) -> ChatMember status; the bot is "administrator" and everyone else
        # "member" unless overridden here.
        self.chat_member_statuses: dict[tuple[int, int], str] = {}
        # (chat_id, user_id) -> administrator rights that differ from "all granted" (set_admin_rights).
        self.admin_rights: dict[tuple[int, int], dict[str, bool]] = {}
        # Chats whose member list the test keeps (add_chat_member): anyone not in it has "left".
        self._member_lists: set[int] = set()
        self._ban_until: dict[tuple[int, int], int] = {}
        self.files: dict[str, StoredFile] = {}
        # Exceptions raised inside method handlers, i.e. bugs in the fake; tests may assert it stays empty.
        self.server_errors: list[Exception] = []

        self._files_by_path: dict[str, StoredFile] = {}
        self._file_counter = itertools.count(1)
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._callback_ids: set[str] = set()
        self._callback_counter = itertools.count(1)
        self._media_group_counter = itertools.count(1)
        self._chats: dict[int, JSONDict] = {}
        self._channel_ids: dict[str, int] = {}
        self._users: dict[int, JSONDict] = {}
        self._messages: dict[int, dict[int, JSONDict]] = {}
        self._next_message_id: dict[int, int] = {}

        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._updates_signal = _Signal()
        self._calls_signal = _Signal()
        self._methods = self._method_table()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 and set `url`."""
        if self._runner is not None:
            raise RuntimeError("FakeBotApi is already running")
        # Events bind to the loop that first waits on them, so a restart in a new loop needs fresh ones.
        self._closing = asyncio.Event()
        self._updates_signal = _Signal()
        self._calls_signal = _Signal()
        app = web.Application(client_max_size=_MAX_UPLOAD)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        # Handlers only sleep while watching _closing, so a short shutdown timeout never cuts real work.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Answer in-flight requests at once and close the server."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        self._updates_signal.notify()
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

    # ------------------------------------------------------------------ injecting user activity

    def add_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update for getUpdates, assigning update_id if it has none."""
        update_id = update.get("update_id")
        if not isinstance(update_id, int):
            update_id = self._next_update_id
            update["update_id"] = update_id
        self._next_update_id = max(self._next_update_id, update_id + 1)
        callback = update.get("callback_query")
        if isinstance(callback, dict) and "id" in callback:
            self._callback_ids.add(str(callback["id"]))
        pending = self.pending_updates
        if not pending or pending[-1]["update_id"] < update_id:
            pending.append(update)
        else:
            # Keeping the queue sorted lets offset confirmation cut a prefix instead of filtering.
            bisect.insort(pending, update, key=lambda item: item["update_id"])
        self._updates_signal.notify()
        return update

    def add_message(
        self,
        *,
        user_id: int,
        text: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str | None = "en",
        first_name: str = "Test",
        username: str | None = None,
        photo_file_id: str | None = None,
        document_file_id: str | None = None,
        voice_file_id: str | None = None,
        location: tuple[float, float] | None = None,
        reply_to_message_id: int | None = None,
        caption: str | None = None,
        sticker: bool = False,
    ) -> dict[str, Any]:
        """Queue a message a user sent and store it in the chat history."""
        user = self._remember_user(user_id, first_name, username, language_code)
        chat = self._user_chat(user_id if chat_id is None else chat_id, chat_type, user)
        reply = None if reply_to_message_id is None else self._reply_copy(chat, reply_to_message_id)
        msg = self._new_message(chat, None if chat_type == "channel" else user)
        if chat_type == "channel":
            msg["sender_chat"] = chat
        if reply is not None:
            msg["reply_to_message"] = reply
        if text is not None:
            msg["text"] = text
            entities = _command_entities(text)
            if entities:
                msg["entities"] = entities
        if photo_file_id is not None:
            msg["photo"] = self._media_object("photo", self._lookup_file(photo_file_id), {})
        if document_file_id is not None:
            msg["document"] = self._media_object("document", self._lookup_file(document_file_id), {})
        if voice_file_id is not None:
            msg["voice"] = self._media_object("voice", self._lookup_file(voice_file_id), {})
        if sticker:
            msg["sticker"] = {
                "file_id": "fake-sticker",
                "file_unique_id": "fake-sticker-u",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
            }
        if location is not None:
            msg["location"] = {"latitude": location[0], "longitude": location[1]}
        if caption is not None:
            msg["caption"] = caption
        key = "channel_post" if chat_type == "channel" else "message"
        return self.add_update({key: dict(msg)})

    def add_edited_message(
        self, *, user_id: int, message_id: int, text: str, chat_id: int | None = None
    ) -> dict[str, Any]:
        """Queue an edit of a user's message and apply it to the chat history."""
        target = user_id if chat_id is None else chat_id
        stored = self._messages.get(target, {}).get(message_id)
        now = int(time.time())
        if stored is None:
            user = self._users.get(user_id) or self._remember_user(user_id, "Test", None, "en")
            chat = self._chats.get(target) or self._user_chat(target, "private", user)
            edited: JSONDict = {"message_id": message_id, "date": now, "chat": chat, "from": user}
        else:
            edited = stored
            edited.pop("entities", None)
        edited["text"] = text
        entities = _command_entities(text)
        if entities:
            edited["entities"] = entities
        edited["edit_date"] = now
        key = "edited_channel_post" if edited["chat"].get("type") == "channel" else "edited_message"
        return self.add_update({key: dict(edited)})

    def add_callback_query(
        self,
        *,
        user_id: int,
        data: str,
        message_id: int,
        chat_id: int | None = None,
        language_code: str | None = "en",
        chat_type: str = "private",
    ) -> dict[str, Any]:
        """Queue a press on an inline button of the bot's message `message_id`."""
        known = self._users.get(user_id)
        user = self._remember_user(
            user_id,
            known["first_name"] if known else "Test",
            known.get("username") if known else None,
            language_code,
        )
        target = user_id if chat_id is None else chat_id
        stored = self._messages.get(target, {}).get(message_id)
        if stored is not None:
            message = dict(stored)
        else:
            chat = self._chats.get(target) or self._user_chat(target, chat_type, user)
            message = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": chat,
                "from": self.bot_user,
            }
        query = {
            "id": str(4_000_000_000_000_000 + next(self._callback_counter)),
            "from": user,
            "message": message,
            "chat_instance": f"ci{target}",
            "data": data,
        }
        return self.add_update({"callback_query": query})

    def add_file(self, content: bytes, *, file_name: str = "file.bin") -> str:
        """Store bytes as a Telegram file and return its file_id."""
        return self._store_file(content, file_name, None, "document").file_id

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

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """Return the chat's current messages, user's and bot's, oldest first, with edits applied."""
        return list(self._messages.get(chat_id, {}).values())

    # ------------------------------------------------------------------ faults

    def set_rate_limit(self, per_second: float | None, *, retry_after: int | None = None) -> None:
        """Answer 429 once sending methods exceed `per_second` within any sliding second; None disables."""
        self._rate_limit = per_second
        self._rate_window.clear()
        if retry_after is not None:
            self.rate_limit_retry_after = max(1, int(retry_after))

    def fail_next(
        self, method: str, times: int = 1, *, status: int = 500, description: str = "Internal Server Error"
    ) -> None:
        """Make the next `times` calls of `method` fail with `status`."""
        description = _worded(status, description, "Internal Server Error")
        queue = self._faults.setdefault(method.lower(), deque())
        queue.extend(_Fault(status, description) for _ in range(times))

    def timeout_next(self, method: str, times: int = 1, *, delay: float = 30.0, deliver: bool = True) -> None:
        """Make the next `times` calls of `method` go unanswered for `delay` seconds."""
        queue = self._stalls.setdefault(method.lower(), deque())
        queue.extend(_Stall(delay, deliver) for _ in range(times))

    def set_chat_limits(
        self,
        *,
        group_per_min: int | None = None,
        private_per_s: float | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Enforce Telegram's per-chat flood windows on the sending and editing methods.

        Groups, supergroups and channels (negative ids, "@channel") admit `group_per_min` calls
        per sliding minute; private chats `private_per_s` per sliding second, or one call per
        1/`private_per_s` seconds below one a second. A refused call gets 429 with retry_after
        the whole seconds until the chat's oldest call leaves its window, or `retry_after` when
        given. None turns a limit off; every call replaces all three settings and empties the
        windows. set_rate_limit's global window still applies on top.
        """
        if group_per_min is not None and group_per_min < 1:
            raise ValueError("group_per_min must be at least 1")
        if private_per_s is not None and not private_per_s > 0:
            raise ValueError("private_per_s must be positive")
        self._group_rule = None if group_per_min is None else (int(group_per_min), _GROUP_WINDOW)
        if private_per_s is None:
            self._private_rule = None
        elif private_per_s >= 1:
            self._private_rule = (max(1, math.floor(private_per_s)), _PRIVATE_WINDOW)
        else:
            self._private_rule = (1, 1.0 / private_per_s)
        self._chat_retry_after = None if retry_after is None else max(1, int(retry_after))
        self._chat_windows.clear()

    def fail_chat(self, chat_id: int, status: int = 502, description: str = "Bad Gateway") -> None:
        """Answer every write into `chat_id` with `status` until heal_chat; 502/504 come as plain text."""
        self._chat_outages[chat_id] = _Fault(status, _worded(status, description, "Bad Gateway"))

    def heal_chat(self, chat_id: int) -> None:
        """End a fail_chat outage."""
        self._chat_outages.pop(chat_id, None)

    # ------------------------------------------------------------------ chat life cycle

    def migrate_chat(self, old_chat_id: int, new_chat_id: int, *, by_user_id: int = 1) -> None:
        """Upgrade a group to a supergroup: writes to the old id fail with migrate_to_chat_id.

        Queues the two service messages Telegram sends, migrate_to_chat_id in the old group and
        migrate_from_chat_id in the new supergroup.
        """
        old_chat = self._chat(old_chat_id)
        title = old_chat.get("title") or f"Test supergroup {abs(new_chat_id)}"
        new_chat: JSONDict = {"id": new_chat_id, "type": "supergroup", "title": title}
        self._chats[new_chat_id] = new_chat
        self._migrations[old_chat_id] = new_chat_id
        user = self._user(by_user_id)
        farewell = self._new_message(old_chat, user)
        farewell["migrate_to_chat_id"] = new_chat_id
        self.add_update({"message": dict(farewell)})
        welcome = self._new_message(new_chat, user)
        welcome["migrate_from_chat_id"] = old_chat_id
        self.add_update({"message": dict(welcome)})

    def kick_bot(self, chat_id: int, *, by_user_id: int = 1, status: str = "kicked") -> dict[str, Any]:
        """Remove ("kicked", "left") or restrict ("restricted") the bot in a chat; return the update.

        Writes into the chat then fail like Telegram's (403 for kicked/left, 400 for restricted),
        getChatMember reports the new status, and a my_chat_member update is queued. In a private
        chat this is the user blocking the bot, so `from` is that user whatever `by_user_id` says.
        """
        if status not in _BOT_REMOVED_STATUSES:
            raise ValueError(f"status must be one of {sorted(_BOT_REMOVED_STATUSES)}, not {status!r}")
        update = self._bot_status_change(chat_id, by_user_id, status)
        self._bot_removals[chat_id] = status
        return update

    def restore_bot(
        self, chat_id: int, *, by_user_id: int = 1, status: str = "administrator"
    ) -> dict[str, Any]:
        """Undo kick_bot: the bot becomes `status` again ("member" in private chats); return the update."""
        if status not in _BOT_PRESENT_STATUSES:
            raise ValueError(f"status must be one of {sorted(_BOT_PRESENT_STATUSES)}, not {status!r}")
        update = self._bot_status_change(chat_id, by_user_id, status)
        self._bot_removals.pop(chat_id, None)
        return update

    def delete_chat(self, chat_id: int) -> None:
        """Make the chat vanish: writes, getChat and getChatMember answer "chat not found"."""
        self._deleted_chats.add(chat_id)

    # ------------------------------------------------------------------ a group's members

    def add_chat_member(
        self,
        chat_id: int,
        user_id: int,
        status: str = "member",
        *,
        by_user_id: int | None = None,
        first_name: str = "Test",
        username: str | None = None,
        update: bool = True,
    ) -> dict[str, Any] | None:
        """Give a user `status` in a group's member list ("member", "administrator", "creator",
        "restricted"; "left" or "kicked" take them out) and return the chat_member update Telegram sends.

        From the first call on, the chat's member list is the fake's: getChatMember answers "left" for
        anyone not in it and getChatMemberCount counts it (the bot included). Telegram sends chat_member
        updates only to a bot that administers the chat, so there is none otherwise (None is returned),
        nor with `update=False` (someone who joined before the bot could see it). `by_user_id` made the
        change (default: the user, joining by link).
        """
        if status not in _MEMBER_STATUSES:
            raise ValueError(f"status must be one of {sorted(_MEMBER_STATUSES)}, not {status!r}")
        if user_id == self.bot_id:
            raise ValueError("the bot's own status changes with kick_bot and restore_bot")
        known = self._users.get(user_id)
        if known is None or known.get("first_name") != first_name or known.get("username") != username:
            self._remember_user(user_id, first_name, username, (known or {}).get("language_code"))
        self._member_lists.add(chat_id)
        return self._member_change(chat_id, user_id, status, by_user_id or user_id, update=update)

    def set_admin_rights(self, chat_id: int, user_id: int | None = None, **rights: bool) -> None:
        """Change an administrator's rights in a chat (the bot's by default), e.g. can_restrict_members=False
        for an administrator who may not ban users."""
        unknown = set(rights) - set(_ADMIN_RIGHTS) - {"can_promote_members"}
        if unknown:
            raise ValueError(f"unknown administrator rights: {sorted(unknown)}")
        key = (chat_id, self.bot_id if user_id is None else user_id)
        self.admin_rights[key] = {**self.admin_rights.get(key, {}), **rights}

    def chat_members(self, chat_id: int) -> dict[int, str]:
        """Return the statuses in a chat's member list, the bot's included (kicked and left too)."""
        members = {
            user: status for (chat, user), status in self.chat_member_statuses.items() if chat == chat_id
        }
        members.setdefault(self.bot_id, self._status_in(chat_id, self.bot_id))
        return members

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        """Dispatch /bot<token>/<method> like Telegram."""
        requested = request.match_info["method"]
        spec = self._methods.get(requested.lower())
        method = spec.name if spec else requested
        try:
            params = await self._read_params(request)
        except _ApiError as exc:
            return self._answer(
                method, {}, self.clock(), exc.status, _error_payload(exc.status, exc.description)
            )
        except ValueError as exc:
            # aiohttp rejects malformed multipart bodies with ValueError; Telegram answers those with 400.
            return self._answer(method, {}, self.clock(), 400, _error_payload(400, f"Bad Request: {exc}"))
        if self.request_delay > 0:
            await self._sleep(self.request_delay)
        at = self.clock()
        if request.match_info["token"] != self.token:
            return self._answer(method, params, at, 401, _error_payload(401, "Unauthorized"))
        if spec is None:
            return self._answer(method, params, at, 404, _error_payload(404, "Not Found"))

        key = requested.lower()
        faults = self._faults.get(key)
        if faults:
            fault = faults.popleft()
            return self._answer(method, params, at, fault.status, self._fault_payload(fault))

        stalls = self._stalls.get(key)
        if stalls and not stalls[0].deliver:
            lost = stalls.popleft()
            # The request is "lost on the way": Telegram never sees it, the client just hears nothing.
            payload = _error_payload(504, "Gateway Timeout")
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
            payload = _error_payload(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
            return self._answer(method, params, at, 429, payload)
        stall = stalls.popleft() if stalls else None

        try:
            payload = {"ok": True, "result": await spec.handler(params)}
            status = 200
        except _ApiError as exc:
            status = exc.status
            payload = _error_payload(status, exc.description, exc.parameters)
        except Exception as exc:
            # A crash in the fake must surface in the test, not as a bare aiohttp 500 page.
            self.server_errors.append(exc)
            status = 500
            payload = _error_payload(500, f"Internal Server Error: FakeBotApi crashed: {exc!r}")
        if stall is None:
            return self._answer(method, params, at, status, payload)
        self._record(method, params, at, status, payload)
        await self._sleep(stall.delay)
        return self._render(status, payload)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        """Serve the bytes behind a file_path handed out by getFile."""
        file_path = request.match_info["file_path"]
        params: JSONDict = {"file_path": file_path}
        if self.request_delay > 0:
            await self._sleep(self.request_delay)
        at = self.clock()
        if request.match_info["token"] != self.token:
            return self._answer("downloadFile", params, at, 401, _error_payload(401, "Unauthorized"))
        stored = self._files_by_path.get(file_path)
        if stored is None:
            return self._answer("downloadFile", params, at, 404, _error_payload(404, "Not Found"))
        self._record(
            "downloadFile", params, at, 200, {"ok": True, "result": {"file_size": len(stored.content)}}
        )
        return web.Response(body=stored.content, content_type=stored.mime_type or "application/octet-stream")

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        """Answer paths outside the Bot API with Telegram's JSON 404."""
        params: JSONDict = {"path": request.path}
        return self._answer("unknown", params, self.clock(), 404, _error_payload(404, "Not Found"))

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
                    raise _bad("can't parse JSON object") from exc
                if not isinstance(body, dict):
                    raise _bad("JSON object expected")
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
        params = _normalise(raw)
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
        plain = _PLAIN_TEXT_STATUSES.get(status)
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

    def _fault_payload(self, fault: _Fault) -> JSONDict:
        """Build the answer of a queued or per-chat fault; a 429 carries retry_after like Telegram's."""
        if fault.status != 429:
            return _error_payload(fault.status, fault.description)
        retry = self.rate_limit_retry_after
        description = fault.description
        if description == "Too Many Requests":
            description = f"Too Many Requests: retry after {retry}"
        return _error_payload(429, description, {"retry_after": retry})

    def _target_chat(self, p: JSONDict) -> int | None:
        """Return the numeric chat a call writes into, or None when it names none usable."""
        raw = p.get("chat_id")
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.startswith("@"):
            with contextlib.suppress(_ApiError):
                return self._resolve_chat_id(raw)
        return None

    def _admit(self, now: float, chat_id: int | None) -> int | None:
        """Apply the global and per-chat sliding windows; return retry_after for a refused call.

        A refused call enters no window, so it never delays the calls after it.
        """
        retry = 0
        limit = self._rate_limit
        window = self._rate_window
        if limit is not None:
            cutoff = now - 1.0
            while window and window[0] <= cutoff:
                window.popleft()
            if len(window) + 1 > limit:
                retry = self.rate_limit_retry_after
        rule = None if chat_id is None else self._group_rule if chat_id < 0 else self._private_rule
        events: list[float] | None = None
        if rule is not None and chat_id is not None:
            capacity, length = rule
            events = self._chat_windows.setdefault(chat_id, [])
            expired = bisect.bisect_right(events, now - length)
            if expired:
                del events[:expired]
            if len(events) >= capacity:
                wait = self._chat_retry_after
                if wait is None:
                    # The next call fits once the oldest of the window's calls has left it.
                    wait = max(1, math.ceil(events[-capacity] + length - now))
                retry = max(retry, wait)
                events = None
        if retry:
            return retry
        if limit is not None:
            window.append(now)
        if events is not None:
            events.append(now)
        return None

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

    # ------------------------------------------------------------------ state helpers

    def _remember_user(
        self, user_id: int, first_name: str, username: str | None, language_code: str | None
    ) -> JSONDict:
        """Build a User object and remember it for later updates and getChatMember."""
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username is not None:
            user["username"] = username
        if language_code is not None:
            user["language_code"] = language_code
        self._users[user_id] = user
        return user

    def _user_chat(self, chat_id: int, chat_type: str, user: JSONDict) -> JSONDict:
        """Return the Chat object a user writes in, creating or retyping it."""
        chat = self._chats.get(chat_id)
        if chat is not None and chat["type"] == chat_type:
            return chat
        if chat_type == "private":
            chat = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
            if "username" in user:
                chat["username"] = user["username"]
        else:
            chat = {"id": chat_id, "type": chat_type, "title": f"Test {chat_type} {abs(chat_id)}"}
        self._chats[chat_id] = chat
        return chat

    def _chat(self, chat_id: int) -> JSONDict:
        """Return the Chat object for an id, inferring its type from the id's range when unseen."""
        chat = self._chats.get(chat_id)
        if chat is None:
            if chat_id > 0:
                user = self._users.get(chat_id)
                chat = {
                    "id": chat_id,
                    "type": "private",
                    "first_name": user["first_name"] if user else "Test",
                }
            elif chat_id <= -1_000_000_000_000:
                chat = {"id": chat_id, "type": "supergroup", "title": f"Test supergroup {-chat_id}"}
            else:
                chat = {"id": chat_id, "type": "group", "title": f"Test group {-chat_id}"}
            self._chats[chat_id] = chat
        return chat

    def _resolve_chat_id(self, raw: Any, *, name: str = "chat_id") -> int:
        """Turn a chat_id parameter (int or "@channel") into a numeric id."""
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if raw is None or raw == "":
            raise _bad(f"{name} is empty")
        if isinstance(raw, str) and raw.startswith("@") and len(raw) > 1:
            chat_id = self._channel_ids.get(raw.lower())
            if chat_id is None:
                chat_id = -1_001_000_000_000 - len(self._channel_ids)
                self._channel_ids[raw.lower()] = chat_id
                self._chats[chat_id] = {
                    "id": chat_id,
                    "type": "channel",
                    "title": raw[1:],
                    "username": raw[1:],
                }
            return chat_id
        raise _bad("chat not found")

    def _write_chat(self, p: JSONDict) -> int:
        """Resolve the chat a method writes into, enforcing forbidden_chats and the chat's state."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        if chat_id in self.forbidden_chats:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _writable_chat_id(self, raw: Any) -> int:
        """Resolve a chat id, failing like Telegram when the chat is gone, migrated or bars the bot."""
        chat_id = self._resolve_chat_id(raw)
        if chat_id in self._deleted_chats:
            raise _bad("chat not found")
        migrated_to = self._migrations.get(chat_id)
        if migrated_to is not None:
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": migrated_to},
            )
        removal = self._bot_removals.get(chat_id)
        if removal is not None:
            raise self._removal_error(chat_id, removal)
        return chat_id

    def _removal_error(self, chat_id: int, status: str) -> _ApiError:
        """Word Telegram's refusal of a write by a bot that was removed or restricted."""
        if status == "restricted":
            return _bad("not enough rights to send text messages to the chat")
        chat_type = self._chat(chat_id)["type"]
        if chat_type == "private":
            return _ApiError(403, "Forbidden: bot was blocked by the user")
        if status == "kicked":
            return _ApiError(403, f"Forbidden: bot was kicked from the {chat_type} chat")
        return _ApiError(403, f"Forbidden: bot is not a member of the {chat_type} chat")

    def _user(self, user_id: int) -> JSONDict:
        """Return the User object of a known user, or a plain stand-in."""
        return self._users.get(user_id) or {"id": user_id, "is_bot": False, "first_name": "Test"}

    def _bot_status_change(self, chat_id: int, by_user_id: int, status: str) -> JSONDict:
        """Move the bot to `status` in a chat and queue the my_chat_member update saying so."""
        chat = self._chat(chat_id)
        key = (chat_id, self.bot_id)
        private = chat["type"] == "private"
        default = "member" if private else "administrator"
        if private and status == "administrator":
            status = "member"  # nobody administers a private chat
        old_member = self._member(self.bot_id, self.chat_member_statuses.get(key, default), chat_id)
        new_member = self._member(self.bot_id, status, chat_id)
        self.chat_member_statuses[key] = status
        change: JSONDict = {
            "chat": chat,
            "from": self._user(chat_id if private else by_user_id),
            "date": int(time.time()),
            "old_chat_member": old_member,
            "new_chat_member": new_member,
        }
        return self.add_update({"my_chat_member": change})

    def _status_in(self, chat_id: int, user_id: int) -> str:
        """Return a user's status in a chat: the bot administers it unless told otherwise, a user not in
        a kept member list has left, anyone else is a member."""
        status = self.chat_member_statuses.get((chat_id, user_id))
        if status is not None:
            return status
        if user_id == self.bot_id:
            return "administrator"
        return "left" if chat_id in self._member_lists else "member"

    def _rights_of(self, chat_id: int, user_id: int) -> dict[str, bool]:
        """Return an administrator's rights: all of them unless set_admin_rights took some away."""
        rights = dict.fromkeys(_ADMIN_RIGHTS, True)
        rights["can_promote_members"] = False
        rights.update(self.admin_rights.get((chat_id, user_id), {}))
        return rights

    def _member_change(
        self, chat_id: int, user_id: int, status: str, by_user_id: int, *, update: bool = True
    ) -> JSONDict | None:
        """Move a user to `status` in a chat; queue the chat_member update if the bot administers it."""
        old = self._status_in(chat_id, user_id)
        self.chat_member_statuses[(chat_id, user_id)] = status
        if status != "kicked":
            self._ban_until.pop((chat_id, user_id), None)
        bot_status = self._status_in(chat_id, self.bot_id)
        if not update or old == status or bot_status not in ("administrator", "creator"):
            return None
        change: JSONDict = {
            "chat": self._chat(chat_id),
            "from": self.bot_user if by_user_id == self.bot_id else self._user(by_user_id),
            "date": int(time.time()),
            "old_chat_member": self._member(user_id, old, chat_id),
            "new_chat_member": self._member(user_id, status, chat_id),
        }
        return self.add_update({"chat_member": change})

    def _may_restrict(self, chat_id: int) -> bool:
        """Tell whether the bot may ban and unban members of a chat."""
        status = self._status_in(chat_id, self.bot_id)
        if status == "creator":
            return True
        return status == "administrator" and self._rights_of(chat_id, self.bot_id)["can_restrict_members"]

    @staticmethod
    def _target_user(p: JSONDict) -> int:
        """Return the user_id parameter of a method about a chat member."""
        user_id = p.get("user_id")
        if isinstance(user_id, bool) or not isinstance(user_id, int):
            raise _bad("invalid user_id specified")
        return user_id

    def _new_message(self, chat: JSONDict, sender: JSONDict | None) -> JSONDict:
        """Allocate the chat's next message_id and store an empty message under it."""
        chat_id = chat["id"]
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        msg: JSONDict = {"message_id": message_id}
        if sender is not None:
            msg["from"] = sender
        msg["chat"] = chat
        msg["date"] = int(time.time())
        self._messages.setdefault(chat_id, {})[message_id] = msg
        return msg

    def _reply_copy(self, chat: JSONDict, message_id: int) -> JSONDict:
        """Return what Telegram embeds as reply_to_message (one level deep only)."""
        stored = self._messages.get(chat["id"], {}).get(message_id)
        if stored is None:
            return {"message_id": message_id, "date": int(time.time()), "chat": chat}
        reply = dict(stored)
        reply.pop("reply_to_message", None)
        return reply

    def _reply_target(self, chat_id: int, p: JSONDict) -> JSONDict | None:
        """Find the message a send replies to, failing like Telegram when it is gone."""
        params = p.get("reply_parameters")
        allow_missing = bool(p.get("allow_sending_without_reply"))
        message_id: Any = p.get("reply_to_message_id")
        if isinstance(params, dict):
            message_id = params.get("message_id", message_id)
            allow_missing = bool(params.get("allow_sending_without_reply", allow_missing))
            if "chat_id" in params:
                # Cross-chat replies are rare in this bot; accept them without embedding the original.
                return None
        if message_id is None:
            return None
        stored = self._messages.get(chat_id, {}).get(message_id)
        if stored is None:
            if allow_missing:
                return None
            raise _bad("message to be replied not found")
        reply = dict(stored)
        reply.pop("reply_to_message", None)
        return reply

    def _bot_message(self, chat_id: int, p: JSONDict) -> JSONDict:
        """Create and store a message the bot sends, honouring reply parameters."""
        reply = self._reply_target(chat_id, p)
        msg = self._new_message(self._chat(chat_id), self.bot_user)
        if reply is not None:
            msg["reply_to_message"] = reply
        return msg

    @staticmethod
    def _inline_markup(p: JSONDict) -> JSONDict | None:
        """Return the inline keyboard to attach; other keyboards never show up on the Message."""
        markup = p.get("reply_markup")
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            return None
        keyboard = markup["inline_keyboard"]
        if isinstance(keyboard, list):
            rows = [row for row in keyboard if isinstance(row, list)]
            if sum(map(len, rows)) > _MAX_BUTTONS:
                raise _bad("reply markup is too long")
            for row in rows:
                for button in row:
                    data = button.get("callback_data") if isinstance(button, dict) else None
                    if data is not None and not (
                        isinstance(data, str)
                        and 1 <= len(data.encode("utf-8", "surrogatepass")) <= _MAX_CALLBACK_DATA
                    ):
                        raise _bad("BUTTON_DATA_INVALID")
        return markup

    @staticmethod
    def _caption(p: JSONDict) -> str | None:
        """Validate and return the caption parameter."""
        caption = p.get("caption")
        if caption is None:
            return None
        caption = str(caption)
        if len(caption) > _MAX_CAPTION:
            raise _bad("message caption is too long")
        return caption

    @staticmethod
    def _text(p: JSONDict) -> str:
        """Validate and return the text parameter."""
        text = p.get("text")
        text = "" if text is None else str(text)
        if not text.strip():
            raise _bad("message text is empty")
        if len(text) > _MAX_TEXT:
            raise _bad("message is too long")
        return text

    def _store_file(self, content: bytes, file_name: str, mime_type: str | None, kind: str) -> StoredFile:
        """Register bytes under a fresh file_id and file_path."""
        number = next(self._file_counter)
        suffix = ""
        dot = file_name.rfind(".")
        if dot > 0:
            suffix = file_name[dot:]
        stored = StoredFile(
            file_id=f"FAKE-{kind}-{number:06d}",
            file_unique_id=f"U{number:06d}",
            file_path=f"{_FILE_FOLDERS.get(kind, 'documents')}/file_{number}{suffix}",
            file_name=file_name,
            mime_type=mime_type or mimetypes.guess_type(file_name)[0],
            content=content,
        )
        self.files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    def _lookup_file(self, file_id: str) -> StoredFile:
        """Return a stored file, or an unregistered stand-in for ids the test made up."""
        stored = self.files.get(file_id)
        if stored is not None:
            return stored
        return StoredFile(file_id, f"U-{file_id}"[:32], "", "file", None, b"")

    def _file_param(self, value: Any, kind: str) -> StoredFile:
        """Turn an uploaded file, URL or file_id parameter into a file record."""
        if isinstance(value, UploadedFile):
            name = value.filename or f"{kind}.bin"
            mime = value.content_type if value.content_type != "application/octet-stream" else None
            return self._store_file(value.content, name, mime, kind)
        if not isinstance(value, str) or not value:
            raise _bad(f"there is no {kind} in the request")
        if value.startswith(("http://", "https://")):
            # Telegram would fetch the URL; the fake cannot, so the file exists but is empty.
            name = value.rsplit("/", 1)[-1] or f"{kind}.bin"
            return self._store_file(b"", name, None, kind)
        return self._lookup_file(value)

    @staticmethod
    def _media_object(kind: str, stored: StoredFile, p: JSONDict) -> Any:
        """Build the PhotoSize list / Document / Video / Voice / Audio object for a message."""
        base: JSONDict = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if stored.content:
            base["file_size"] = len(stored.content)
        if kind == "photo":
            # Telegram always offers several sizes; bots usually take the last (largest) one.
            return [{**base, "width": 90, "height": 90}, {**base, "width": 1280, "height": 720}]
        duration = p.get("duration")
        duration = duration if isinstance(duration, int) else 1
        if kind == "video":
            return {**base, "width": 1280, "height": 720, "duration": duration, "mime_type": "video/mp4"}
        if kind == "voice":
            return {**base, "duration": duration, "mime_type": "audio/ogg"}
        obj = {**base, "file_name": stored.file_name}
        if stored.mime_type:
            obj["mime_type"] = stored.mime_type
        if kind == "audio":
            obj["duration"] = duration
        return obj

    def _editable(self, p: JSONDict) -> JSONDict:
        """Find the bot's own message an edit targets."""
        chat_id = self._write_chat(p)
        msg = self._messages.get(chat_id, {}).get(p.get("message_id", 0))
        if msg is None:
            raise _bad("message to edit not found")
        sender = msg.get("from")
        if sender is None or sender.get("id") != self.bot_id:
            raise _bad("message can't be edited")
        return msg

    def _source_messages(self, p: JSONDict) -> dict[int, JSONDict]:
        """Return the history of from_chat_id, where copies and forwards take messages from."""
        return self._messages.get(self._resolve_chat_id(p.get("from_chat_id"), name="from_chat_id"), {})

    @staticmethod
    def _copy_content(src: JSONDict, msg: JSONDict) -> None:
        """Copy a message's content (text, media, captions) without its envelope."""
        for key, value in src.items():
            if key not in _ENVELOPE_KEYS:
                msg[key] = value

    @staticmethod
    def _forward_origin(src: JSONDict) -> JSONDict:
        """Describe where a forwarded message came from."""
        if "sender_chat" in src:
            return {
                "type": "channel",
                "date": src["date"],
                "chat": src["sender_chat"],
                "message_id": src["message_id"],
            }
        if "from" in src:
            return {"type": "user", "date": src["date"], "sender_user": src["from"]}
        return {"type": "hidden_user", "date": src["date"], "sender_user_name": "Unknown"}

    # ------------------------------------------------------------------ Bot API methods

    def _method_table(self) -> dict[str, _Method]:
        """List the supported methods, keyed by lower-case name since Telegram ignores case."""
        handlers: dict[str, Handler] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "logOut": self._true,
            "close": self._true,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendVideo": self._send_video,
            "sendVoice": self._send_voice,
            "sendAudio": self._send_audio,
            "sendLocation": self._send_location,
            "sendMediaGroup": self._send_media_group,
            "sendChatAction": self._send_chat_action,
            "copyMessage": self._copy_message,
            "copyMessages": self._copy_messages,
            "forwardMessage": self._forward_message,
            "forwardMessages": self._forward_messages,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "editMessageCaption": self._edit_message_caption,
            "answerCallbackQuery": self._answer_callback_query,
            "deleteMessage": self._delete_message,
            "deleteMessages": self._delete_messages,
            "getFile": self._get_file,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getChatMemberCount": self._get_chat_member_count,
            "banChatMember": self._ban_chat_member,
            "unbanChatMember": self._unban_chat_member,
            "leaveChat": self._leave_chat,
        }
        return {
            name.lower(): _Method(name, handler, name in RATE_LIMITED_METHODS, name in _WRITE_METHODS)
            for name, handler in handlers.items()
        }

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

    async def _get_updates(self, p: JSONDict) -> list[JSONDict]:
        """Long-poll the update queue."""
        if self.webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        limit = p.get("limit", 100)
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = p.get("timeout", 0)
        try:
            wait = max(float(timeout), 0.0)
        except (TypeError, ValueError):
            wait = 0.0
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(map(str, allowed)) or None
        offset = p.get("offset")
        if isinstance(offset, int):
            self._confirm(offset)

        # Telegram lets only one poller wait; a newer request ends the older one with 409.
        self._poll_generation += 1
        generation = self._poll_generation
        self._updates_signal.notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            batch = self._select_updates(limit)
            if batch or self._closing.is_set():
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return batch
            await self._updates_signal.wait(remaining)

    def _confirm(self, offset: int) -> None:
        """Forget updates below `offset`, which the bot thereby confirmed."""
        pending = self.pending_updates
        if offset < 0:
            # A negative offset keeps only the last -offset updates, as documented for getUpdates.
            keep = pending[offset:]
            dropped = len(pending) - len(keep)
            del pending[:dropped]
            if pending:
                self.acknowledged_offset = max(self.acknowledged_offset, pending[0]["update_id"])
            return
        self.acknowledged_offset = max(self.acknowledged_offset, offset)
        cut = bisect.bisect_left(pending, offset, key=lambda item: item["update_id"])
        if cut:
            del pending[:cut]

    def _select_updates(self, limit: int) -> list[JSONDict]:
        """Return up to `limit` pending updates the bot subscribed to."""
        allowed = self._allowed_updates
        batch: list[JSONDict] = []
        for update in self.pending_updates:
            kind = _update_type(update)
            if (kind in allowed) if allowed is not None else (kind not in _DEFAULT_EXCLUDED_UPDATES):
                batch.append(update)
                if len(batch) >= limit:
                    break
        return batch

    async def _delete_webhook(self, p: JSONDict) -> bool:
        """Remove the webhook, optionally dropping the queue."""
        self.webhook_url = None
        if p.get("drop_pending_updates"):
            self.pending_updates.clear()
        return True

    async def _set_webhook(self, p: JSONDict) -> bool:
        """Store the webhook URL; an empty URL removes it."""
        url = p.get("url")
        self.webhook_url = str(url) if url else None
        if p.get("drop_pending_updates"):
            self.pending_updates.clear()
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(map(str, allowed)) or None
        return True

    async def _get_webhook_info(self, p: JSONDict) -> JSONDict:
        """Describe the webhook state."""
        info: JSONDict = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending_updates),
        }
        if self._allowed_updates is not None:
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    @staticmethod
    def _language(p: JSONDict) -> str | None:
        """Return the language_code parameter, treating "" as the default language."""
        code = p.get("language_code")
        return str(code) if code else None

    async def _set_my_commands(self, p: JSONDict) -> bool:
        """Store the command list for a scope and language."""
        commands = p.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise _bad("BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if (
                not isinstance(command, dict)
                or not _COMMAND_NAME_RE.fullmatch(str(command.get("command", "")))
                or not 1 <= len(str(command.get("description", ""))) <= 256
            ):
                raise _bad("BOT_COMMAND_INVALID")
        language = self._language(p)
        scope = _scope_key(p.get("scope"))
        if not commands:
            # Telegram treats an empty list as deleting the commands.
            return await self._delete_my_commands(p)
        self.my_commands_by_scope[(scope, language)] = commands
        if scope == "default":
            self.my_commands[language] = commands
        return True

    async def _get_my_commands(self, p: JSONDict) -> list[JSONDict]:
        """Return the commands stored for exactly this scope and language."""
        return self.my_commands_by_scope.get((_scope_key(p.get("scope")), self._language(p)), [])

    async def _delete_my_commands(self, p: JSONDict) -> bool:
        """Forget the commands of a scope and language."""
        language = self._language(p)
        scope = _scope_key(p.get("scope"))
        self.my_commands_by_scope.pop((scope, language), None)
        if scope == "default":
            self.my_commands.pop(language, None)
        return True

    async def _send_message(self, p: JSONDict) -> JSONDict:
        """Store and return a text message."""
        chat_id = self._write_chat(p)
        text = self._text(p)
        markup = self._inline_markup(p)
        msg = self._bot_message(chat_id, p)
        msg["text"] = text
        entities = p.get("entities")
        if entities:
            msg["entities"] = entities
        if markup is not None:
            msg["reply_markup"] = markup
        return dict(msg)

    async def _send_media(self, p: JSONDict, kind: str) -> JSONDict:
        """Store and return a message carrying one file."""
        chat_id = self._write_chat(p)
        if p.get(kind) is None:
            raise _bad(f"there is no {kind} in the request")
        caption = self._caption(p)
        markup = self._inline_markup(p)
        reply = self._reply_target(chat_id, p)
        stored = self._file_param(p[kind], kind)
        msg = self._new_message(self._chat(chat_id), self.bot_user)
        if reply is not None:
            msg["reply_to_message"] = reply
        msg[kind] = self._media_object(kind, stored, p)
        if caption is not None:
            msg["caption"] = caption
            entities = p.get("caption_entities")
            if entities:
                msg["caption_entities"] = entities
        if markup is not None:
            msg["reply_markup"] = markup
        return dict(msg)

    async def _send_photo(self, p: JSONDict) -> JSONDict:
        """Send a photo."""
        return await self._send_media(p, "photo")

    async def _send_document(self, p: JSONDict) -> JSONDict:
        """Send a document."""
        return await self._send_media(p, "document")

    async def _send_video(self, p: JSONDict) -> JSONDict:
        """Send a video."""
        return await self._send_media(p, "video")

    async def _send_voice(self, p: JSONDict) -> JSONDict:
        """Send a voice note."""
        return await self._send_media(p, "voice")

    async def _send_audio(self, p: JSONDict) -> JSONDict:
        """Send an audio file."""
        return await self._send_media(p, "audio")

    async def _send_media_group(self, p: JSONDict) -> list[JSONDict]:
        """Store and return an album, one message per item sharing a media_group_id."""
        chat_id = self._write_chat(p)
        media = p.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _bad("media group must contain 2-10 items")
        items: list[tuple[str, Any, JSONDict]] = []
        # Everything is validated before the first message is stored, so a bad album leaves no trace.
        for item in media:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in ("photo", "video", "document", "audio") or not isinstance(item, dict):
                raise _bad("unsupported media type in the group")
            ref = item.get("media")
            if isinstance(ref, str) and ref.startswith("attach://"):
                ref = p.get(ref.removeprefix("attach://"))
            if not isinstance(ref, UploadedFile) and not (isinstance(ref, str) and ref):
                raise _bad(f"there is no {kind} in the request")
            self._caption(item)
            items.append((kind, ref, item))
        reply = self._reply_target(chat_id, p)
        chat = self._chat(chat_id)
        group_id = str(10_000_000_000_000_000 + next(self._media_group_counter))
        album: list[JSONDict] = []
        for kind, ref, item in items:
            stored = self._file_param(ref, kind)
            msg = self._new_message(chat, self.bot_user)
            if reply is not None:
                msg["reply_to_message"] = reply
            msg["media_group_id"] = group_id
            msg[kind] = self._media_object(kind, stored, item)
            if item.get("caption"):
                msg["caption"] = str(item["caption"])
                if item.get("caption_entities"):
                    msg["caption_entities"] = item["caption_entities"]
            album.append(dict(msg))
        return album

    async def _send_location(self, p: JSONDict) -> JSONDict:
        """Store and return a location message."""
        chat_id = self._write_chat(p)
        latitude, longitude = p.get("latitude"), p.get("longitude")
        if not isinstance(latitude, int | float) or not isinstance(longitude, int | float):
            raise _bad("wrong latitude or longitude specified")
        markup = self._inline_markup(p)
        msg = self._bot_message(chat_id, p)
        msg["location"] = {"latitude": float(latitude), "longitude": float(longitude)}
        if markup is not None:
            msg["reply_markup"] = markup
        return dict(msg)

    async def _send_chat_action(self, p: JSONDict) -> bool:
        """Accept a typing/uploading indicator."""
        self._write_chat(p)
        if not p.get("action"):
            raise _bad("action is empty")
        return True

    async def _copy_message(self, p: JSONDict) -> JSONDict:
        """Copy a message's content into a chat without a link to the original."""
        chat_id = self._write_chat(p)
        src = self._source_messages(p).get(p.get("message_id", 0))
        if src is None:
            raise _bad("message to copy not found")
        caption = self._caption(p) if "caption" in p else None
        markup = self._inline_markup(p)
        msg = self._bot_message(chat_id, p)
        self._copy_content(src, msg)
        if "caption" in p:
            msg.pop("caption_entities", None)
            if caption is None:
                msg.pop("caption", None)
            else:
                msg["caption"] = caption
                if p.get("caption_entities"):
                    msg["caption_entities"] = p["caption_entities"]
        if markup is not None:
            msg["reply_markup"] = markup
        return {"message_id": msg["message_id"]}

    def _message_ids(self, p: JSONDict) -> list[Any]:
        """Return the message_ids list parameter."""
        ids = p.get("message_ids")
        if not isinstance(ids, list) or not ids:
            raise _bad("message identifiers are not specified")
        if len(ids) > 100:
            raise _bad("too many messages")
        return ids

    async def _copy_messages(self, p: JSONDict) -> list[JSONDict]:
        """Copy several messages, skipping those that no longer exist."""
        chat_id = self._write_chat(p)
        ids = self._message_ids(p)
        chat = self._chat(chat_id)
        sources = self._source_messages(p)
        copied: list[JSONDict] = []
        for message_id in ids:
            src = sources.get(message_id)
            if src is None:
                continue
            msg = self._new_message(chat, self.bot_user)
            self._copy_content(src, msg)
            if p.get("remove_caption"):
                msg.pop("caption", None)
                msg.pop("caption_entities", None)
            copied.append({"message_id": msg["message_id"]})
        return copied

    def _forward_one(self, chat: JSONDict, src: JSONDict) -> JSONDict:
        """Store a forwarded copy of `src` in `chat`."""
        msg = self._new_message(chat, self.bot_user)
        msg["forward_origin"] = self._forward_origin(src)
        self._copy_content(src, msg)
        return msg

    async def _forward_message(self, p: JSONDict) -> JSONDict:
        """Forward a message, keeping a reference to its origin."""
        chat_id = self._write_chat(p)
        src = self._source_messages(p).get(p.get("message_id", 0))
        if src is None:
            raise _bad("message to forward not found")
        return dict(self._forward_one(self._chat(chat_id), src))

    async def _forward_messages(self, p: JSONDict) -> list[JSONDict]:
        """Forward several messages, skipping those that no longer exist."""
        chat = self._chat(self._write_chat(p))
        sources = self._source_messages(p)
        forwarded: list[JSONDict] = []
        for message_id in self._message_ids(p):
            src = sources.get(message_id)
            if src is not None:
                forwarded.append({"message_id": self._forward_one(chat, src)["message_id"]})
        return forwarded

    async def _edit_message_text(self, p: JSONDict) -> JSONDict | bool:
        """Replace a message's text; omitting reply_markup removes the keyboard, as on Telegram."""
        if p.get("inline_message_id"):
            self._text(p)
            return True
        msg = self._editable(p)
        text = self._text(p)
        if "text" not in msg:
            raise _bad("there is no text in the message to edit")
        markup = self._inline_markup(p)
        entities = p.get("entities") or None
        if msg["text"] == text and msg.get("entities") == entities and msg.get("reply_markup") == markup:
            raise _bad(_NOT_MODIFIED)
        msg["text"] = text
        self._set_or_drop(msg, "entities", entities)
        self._set_or_drop(msg, "reply_markup", markup)
        msg["edit_date"] = int(time.time())
        return dict(msg)

    async def _edit_message_caption(self, p: JSONDict) -> JSONDict | bool:
        """Replace a media message's caption."""
        caption = self._caption(p)
        if p.get("inline_message_id"):
            return True
        msg = self._editable(p)
        if not any(key in msg for key in _MEDIA_KEYS):
            raise _bad("there is no caption in the message to edit")
        markup = self._inline_markup(p)
        entities = p.get("caption_entities") or None
        if (
            msg.get("caption") == caption
            and msg.get("caption_entities") == entities
            and msg.get("reply_markup") == markup
        ):
            raise _bad(_NOT_MODIFIED)
        self._set_or_drop(msg, "caption", caption)
        self._set_or_drop(msg, "caption_entities", entities)
        self._set_or_drop(msg, "reply_markup", markup)
        msg["edit_date"] = int(time.time())
        return dict(msg)

    async def _edit_message_reply_markup(self, p: JSONDict) -> JSONDict | bool:
        """Replace or remove a message's inline keyboard."""
        markup = self._inline_markup(p)
        if p.get("inline_message_id"):
            return True
        msg = self._editable(p)
        if msg.get("reply_markup") == markup:
            raise _bad(_NOT_MODIFIED)
        self._set_or_drop(msg, "reply_markup", markup)
        msg["edit_date"] = int(time.time())
        return dict(msg)

    @staticmethod
    def _set_or_drop(msg: JSONDict, key: str, value: Any) -> None:
        """Set a message field, or remove it when the new value is None."""
        if value is None:
            msg.pop(key, None)
        else:
            msg[key] = value

    async def _answer_callback_query(self, p: JSONDict) -> bool:
        """Acknowledge a button press the fake handed out."""
        if str(p.get("callback_query_id", "")) not in self._callback_ids:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        text = p.get("text")
        if isinstance(text, str) and len(text) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        return True

    async def _delete_message(self, p: JSONDict) -> bool:
        """Delete one message, failing when it does not exist."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        messages = self._messages.get(chat_id, {})
        if messages.pop(p.get("message_id", 0), None) is None:
            raise _bad("message to delete not found")
        return True

    async def _delete_messages(self, p: JSONDict) -> bool:
        """Delete whichever of the listed messages exist."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        messages = self._messages.get(chat_id, {})
        for message_id in self._message_ids(p):
            messages.pop(message_id, None)
        return True

    async def _get_file(self, p: JSONDict) -> JSONDict:
        """Describe a stored file and where to download it."""
        stored = self.files.get(str(p.get("file_id", "")))
        if stored is None:
            raise _bad("invalid file_id")
        if len(stored.content) > _MAX_DOWNLOAD:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }

    async def _get_chat(self, p: JSONDict) -> JSONDict:
        """Return a ChatFullInfo with the fields PTB requires."""
        chat_id = self._resolve_chat_id(p.get("chat_id"))
        if chat_id in self._deleted_chats:
            raise _bad("chat not found")
        chat = self._chat(chat_id)
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    async def _get_chat_member(self, p: JSONDict) -> JSONDict:
        """Return a ChatMember; the bot is an administrator unless chat_member_statuses says otherwise."""
        chat_id = self._resolve_chat_id(p.get("chat_id"))
        if chat_id in self._deleted_chats:
            raise _bad("chat not found")
        user_id = p.get("user_id")
        if not isinstance(user_id, int):
            raise _bad("user not found")
        return self._member(user_id, self._status_in(chat_id, user_id), chat_id)

    async def _get_chat_member_count(self, p: JSONDict) -> int:
        """Count a chat's members (the bot among them): those the test put in its member list."""
        chat_id = self._resolve_chat_id(p.get("chat_id"))
        if chat_id in self._deleted_chats:
            raise _bad("chat not found")
        if self._chat(chat_id)["type"] == "private":
            return 2
        removal = self._bot_removals.get(chat_id)
        if removal in ("kicked", "left"):
            raise self._removal_error(chat_id, removal)
        return sum(status in _INSIDE_STATUSES for status in self.chat_members(chat_id).values())

    async def _ban_chat_member(self, p: JSONDict) -> bool:
        """Remove a user from a group like Telegram: a supergroup keeps them banned (until unbanned or
        until_date), a basic group just removes them; owners and administrators cannot be removed."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        user_id = self._target_user(p)
        chat_type = self._chat(chat_id)["type"]
        if chat_type == "private":
            raise _bad("can't ban members in private chats")
        basic = chat_type == "group"
        if user_id == self.bot_id:
            raise _bad("can't restrict self")
        if not self._may_restrict(chat_id):
            raise _bad("CHAT_ADMIN_REQUIRED" if basic else _NO_RESTRICT_RIGHTS)
        old = self._status_in(chat_id, user_id)
        if old == "creator":
            raise _bad("can't remove chat owner")
        if old == "administrator":
            raise _bad("user is an administrator of the chat")
        if basic:
            if old not in _INSIDE_STATUSES:
                raise _bad("USER_NOT_PARTICIPANT")
            self._member_change(chat_id, user_id, "left", self.bot_id)  # no list of removed users there
            return True
        self._member_change(chat_id, user_id, "kicked", self.bot_id)
        until = p.get("until_date")
        if isinstance(until, int) and until > 0:
            self._ban_until[(chat_id, user_id)] = until
        return True

    async def _unban_chat_member(self, p: JSONDict) -> bool:
        """Lift a ban in a supergroup or channel; without only_if_banned a member is removed as well."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        user_id = self._target_user(p)
        if self._chat(chat_id)["type"] not in ("supergroup", "channel"):
            raise _bad("method is available for supergroup and channel chats only")
        old = self._status_in(chat_id, user_id)
        if p.get("only_if_banned") is True and old != "kicked":
            return True  # Telegram looks first and does nothing, whatever the bot's rights
        if user_id == self.bot_id:
            raise _bad("can't unrestrict self")
        if not self._may_restrict(chat_id):
            raise _bad(_NO_RESTRICT_RIGHTS)
        if old == "creator":
            raise _bad("can't remove chat owner")
        if old == "administrator":
            raise _bad("user is an administrator of the chat")
        if old != "left":
            self._member_change(chat_id, user_id, "left", self.bot_id)
        return True

    def _member(self, user_id: int, status: str, chat_id: int | None = None) -> JSONDict:
        """Build the ChatMember object of `status` with the fields PTB requires for it."""
        user = self.bot_user if user_id == self.bot_id else self._user(user_id)
        member: JSONDict = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(can_be_edited=False, is_anonymous=False)
            if chat_id is None:
                member["can_promote_members"] = False
                member.update(dict.fromkeys(_ADMIN_RIGHTS, True))
            else:
                member.update(self._rights_of(chat_id, user_id))
        elif status == "restricted":
            member["is_member"] = True
            member["until_date"] = 0
            member.update(dict.fromkeys(_MEMBER_PERMISSIONS, False))
        elif status == "kicked":
            member["until_date"] = 0 if chat_id is None else self._ban_until.get((chat_id, user_id), 0)
        return member

    async def _leave_chat(self, p: JSONDict) -> bool:
        """Record that the bot left a chat."""
        self.left_chats.add(self._resolve_chat_id(p.get("chat_id")))
        return True
