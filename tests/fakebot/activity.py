"""What people do in Telegram, injected by the test: messages, edits and button presses."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any, Final

from .messages import MessagesMixin
from .wire import JSONDict

_COMMAND_RE: Final = re.compile(r"/\S+")


def _utf16_len(text: str) -> int:
    """Measure text the way Telegram entity offsets do."""
    return len(text.encode("utf-16-le")) // 2


def _command_entities(text: str) -> list[JSONDict]:
    """Return the bot_command entity Telegram attaches to a leading /command."""
    match = _COMMAND_RE.match(text)
    if match is None:
        return []
    return [{"type": "bot_command", "offset": 0, "length": _utf16_len(match.group())}]


class ActivityMixin(MessagesMixin):
    """Queue the updates people cause and record their messages in the chat histories."""

    def _setup_state(self) -> None:
        """Number button presses from one."""
        super()._setup_state()
        self._callback_counter = itertools.count(1)

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
        if chat["type"] == "private" and chat["id"] == user_id:
            self.started_users.add(user_id)  # a private message to the bot lets it answer (require_start)
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
        if edited["chat"].get("type") == "private" and edited["chat"].get("id") == user_id:
            self.started_users.add(user_id)  # only a message they sent can be edited, so they wrote first
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
        if message["chat"].get("type") == "private" and message["chat"].get("id") == user_id:
            self.started_users.add(user_id)  # pressing a button in their private chat, like a message
        query = {
            "id": str(4_000_000_000_000_000 + next(self._callback_counter)),
            "from": user,
            "message": message,
            "chat_instance": f"ci{target}",
            "data": data,
        }
        return self.add_update({"callback_query": query})
