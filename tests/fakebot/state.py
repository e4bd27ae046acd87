"""The state every concern shares: the bot, the call log, users, chats and their message histories."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .wire import ApiCall, Handler, JSONDict, bad


class Signal:
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


class FakeBotState:
    """The bot's identity and the state every concern reads: the call log, users, chats, histories.

    Each concern mixin adds its own state in `_setup_state` and its Bot API methods in `_handlers`,
    both calling super() so that FakeBotApi gets them all.
    """

    # State is plain attributes mutated without locks, so add_* and the fault setters must run on the
    # event loop thread that serves requests (the test's own loop); that keeps the hot path cheap.

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",  # noqa: S107 - a fake token for a fake server
        *,
        bot_id: int = 123456,
        bot_username: str = "jarchy_test_bot",
        require_start: bool = False,
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
        # Monotonic clock behind ApiCall.at and every rate window; tests may swap it to step time.
        self.clock: Callable[[], float] = time.monotonic
        # Exceptions raised inside method handlers, i.e. bugs in the fake; tests may assert it stays empty.
        self.server_errors: list[Exception] = []
        # Telegram's "a bot cannot write first": when True, writes into the private chat of a user who
        # never messaged this bot are refused (chats.py); off by default so existing tests need no /start.
        self.require_start = require_start
        # While True every method and download answers 401, as Telegram does for a revoked token
        # (ServerCore.revoke); the update queue reads it too, to end a waiting long poll.
        self.revoked = False

        self._chats: dict[int, JSONDict] = {}
        self._channel_ids: dict[str, int] = {}
        self._users: dict[int, JSONDict] = {}
        self._messages: dict[int, dict[int, JSONDict]] = {}
        self._next_message_id: dict[int, int] = {}
        self._closing = asyncio.Event()
        self._updates_signal = Signal()
        self._calls_signal = Signal()
        self._setup_state()

    def _setup_state(self) -> None:
        """Create the state of each concern; every mixin extends this and calls super() first."""

    async def _stop_concerns(self) -> None:
        """Stop what a concern runs by itself (the webhook pusher); each override calls super()."""

    def _handlers(self) -> dict[str, Handler]:
        """Return the Bot API methods a concern answers, by their Bot API spelling; mixins add theirs."""
        return {}

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
            raise bad(f"{name} is empty")
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
        raise bad("chat not found")

    def _user(self, user_id: int) -> JSONDict:
        """Return the User object of a known user, or a plain stand-in."""
        return self._users.get(user_id) or {"id": user_id, "is_bot": False, "first_name": "Test"}

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
