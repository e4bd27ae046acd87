"""Queue messages that must survive a crash, in the same transaction as whatever caused them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime.clock import Clock
from bot.security import Cipher, DecryptionError, Pseudonymizer
from bot.security.bindings import payload_binding
from storage.outbox import NewOutboxRow, OutboxRepository

PRIORITY_SOS = 100
PRIORITY_ALERT = 80
PRIORITY_PERSONAL = 50  # status updates and questions to one person
PRIORITY_REMINDER = 30
PRIORITY_BROADCAST = 0


# Kind of the private notices admins get (the coordinators' chat unreachable, the audit chain broken).
NOTICE_KIND = "admin_notice"


# Methods whose text or caption Telegram reads by parse_mode.
_FORMATTED_METHODS = frozenset(
    {
        "sendMessage", "editMessageText", "editMessageCaption", "copyMessage", "sendPhoto", "sendDocument",
        "sendVideo", "sendAnimation", "sendAudio", "sendVoice",
    }
)  # fmt: skip


def with_parse_mode(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Return the params to store: Telegram HTML unless they say `"parse_mode": None` (plain text).

    Every text the bot queues is rendered by messages/ with its placeholders escaped, so HTML is the
    default, as Defaults makes it for the replies sent through python-telegram-bot. The choice is written
    into the row when it is queued, not made when it is sent: a row queued without parse_mode was plain
    and stays plain, and one that says "HTML" sends as HTML, whichever code queued it.
    """
    if method not in _FORMATTED_METHODS or ("text" not in params and "caption" not in params):
        return params
    if "parse_mode" not in params:
        return {**params, "parse_mode": "HTML"}
    if params["parse_mode"] is None:
        return {key: value for key, value in params.items() if key != "parse_mode"}
    return params


def acts_on_a_message(method: str) -> bool:
    """Tell a method that changes a message already in a chat (only the bot that sent it may)."""
    return method.startswith(("edit", "delete", "stopPoll", "pin", "unpin"))


def chat_kind_of(chat_id: int | str) -> str:
    """Tell a private chat (positive id) from a group or channel (negative id or @username)."""
    return "private" if isinstance(chat_id, int) and chat_id > 0 else "group"


@dataclass(frozen=True)
class OutgoingMessage:
    """One Bot API call to make later; `params` carries chat_id like the Bot API does."""

    method: str
    params: dict[str, Any]
    kind: str
    recipient_user_id: int | None = None  # set when the chat is a person, so a 403 marks them inactive
    priority: int = PRIORITY_PERSONAL
    due_at: datetime | None = None
    dedupe_key: str | None = None
    ref: str | None = None
    held: bool = False  # waits (status "held") until release_held gives it a chat
    expires_at: datetime | None = None  # never sent after this
    # Store a random chat key instead of the chat's pseudonym: the row cannot be joined to anything else
    # sent to that chat (an anonymous report's clean-up). Such a row is not paced with its chat's others.
    unlinked: bool = False
    uid: str = field(default_factory=lambda: secrets.token_hex(16))
    # An edit or a deletion of a message a known bot sent (backup bots): only that bot may send it.
    via_bot: int | None = None


class Outbox:
    """Encrypts and pseudonymises outgoing messages into outbox rows."""

    def __init__(
        self,
        repo: OutboxRepository,
        cipher: Cipher,
        pseudonyms: Pseudonymizer,
        clock: Clock,
        on_enqueued: Callable[[bool], None] | None = None,
        on_withdrawn: Callable[..., None] | None = None,
    ) -> None:
        self._repo = repo
        self._cipher = cipher
        self._pseudonyms = pseudonyms
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._urgent = 0  # the highest priority enqueued since the last notify
        self._on_withdrawn = on_withdrawn
        # With backup bots: the bot in use, written on rows that act on a message already sent (an edit,
        # a deletion), which only the bot whose chat holds that message can do.
        self.bot_id: int | None = None
        # JARCHY_BOT_TOKEN's bot: it sent every message recorded before any backup existed.
        self.main_bot_id: int | None = None

    async def enqueue(self, conn: AsyncConnection, messages: Sequence[OutgoingMessage]) -> int:
        """Add messages in the caller's transaction; return how many were new (dedupe keys skip repeats)."""
        now = self._clock.now()
        rows = []
        self._urgent = max([self._urgent, *(m.priority for m in messages)])
        for message in messages:
            chat_id = message.params.get("chat_id")
            if chat_id is None:
                raise ValueError("an outgoing message needs params['chat_id']")
            rows.append(
                NewOutboxRow(
                    uid=message.uid,
                    kind=message.kind,
                    method=message.method,
                    payload=self._cipher.encrypt_json(
                        with_parse_mode(message.method, message.params),
                        binding=payload_binding(message.uid),
                        # A clean-up names the chat it cleans: its old copies must not outlive it.
                        transient=message.unlinked or message.kind == "cleanup",
                    ),
                    chat_key=(
                        secrets.token_hex(16) if message.unlinked else self._pseudonyms.of_chat(chat_id)
                    ),
                    chat_kind=chat_kind_of(chat_id),
                    recipient=(
                        self._pseudonyms.of_user(message.recipient_user_id)
                        if message.recipient_user_id is not None
                        else None
                    ),
                    priority=message.priority,
                    due_at=message.due_at or now,
                    dedupe_key=message.dedupe_key,
                    ref=message.ref,
                    status="held" if message.held else "pending",
                    expires_at=message.expires_at,
                    via_bot=(
                        message.via_bot
                        if message.via_bot is not None
                        else self.bot_id
                        if acts_on_a_message(message.method)
                        else None
                    ),
                )
            )
        return await self._repo.insert(conn, rows, now)

    async def release_held(
        self,
        conn: AsyncConnection,
        kinds: Sequence[str],
        chat_id: int,
        *,
        statuses: Sequence[str] = ("held",),
        limit: int | None = None,
        due_before: datetime | None = None,
    ) -> int:
        """Send held rows of these kinds (or, with `statuses`, queued ones too) to `chat_id` now; return
        how many. A row that does not decrypt (a wrong key) stays as it is."""
        rows = await self._repo.held(conn, kinds, statuses=statuses, limit=limit, due_before=due_before)
        now = self._clock.now()
        chat_key, chat_kind = self._pseudonyms.of_chat(chat_id), chat_kind_of(chat_id)
        released = 0
        for row in rows:
            binding = payload_binding(row.uid)
            try:
                params = self._cipher.decrypt_json(row.payload, binding=binding)
            except DecryptionError:
                continue
            params["chat_id"] = chat_id
            payload = self._cipher.encrypt_json(params, binding=binding)
            await self._repo.release(conn, row.id, payload, chat_key, chat_kind, now, statuses=statuses)
            released += 1
        return released

    async def cancel_for(self, conn: AsyncConnection, pseudonym: str, kinds: Sequence[str] = ()) -> int:
        """Cancel what is still queued for a person (/forget), or only its rows of these kinds
        (/unsubscribe); deletions of their own conversation still go out."""
        return await self._repo.cancel_pending(
            conn, recipient=pseudonym, keep_kinds=("cleanup",), only_kinds=kinds
        )

    async def cancel_for_ref(self, conn: AsyncConnection, pseudonym: str, ref: str) -> int:
        """Cancel what is still queued for one person about one thing (unfollowing a case)."""
        return await self._repo.cancel_pending(conn, recipient=pseudonym, ref=ref)

    async def cancel_ref(self, conn: AsyncConnection, ref: str, kinds: Sequence[str] = ()) -> int:
        """Cancel what is still queued about one thing (a hearing that moved, a cancelled broadcast),
        or only its rows of these kinds (an alert card's older edits)."""
        return await self._repo.cancel_pending(conn, ref=ref, only_kinds=kinds)

    def withdrawn(
        self, *, ref: str | None = None, pseudonym: str | None = None, kinds: Sequence[str] = ()
    ) -> None:
        """Tell the delivery worker (after the cancelling transaction committed) to drop rows it already
        claimed for this aggregate, or for this person of these kinds."""
        if self._on_withdrawn is not None:
            self._on_withdrawn(ref=ref, recipient=pseudonym, kinds=kinds)

    def notify(self) -> None:
        """Tell the delivery worker new rows are committed (call after the transaction)."""
        urgent, self._urgent = self._urgent >= PRIORITY_SOS, 0
        if self._on_enqueued is not None:
            self._on_enqueued(urgent)
