"""Messages the bot sends, edits, copies, forwards and deletes, with their replies and keyboards."""

from __future__ import annotations

import itertools
import time
from typing import Any, Final

from .chats import ChatsMixin
from .files import FilesMixin
from .formatting import checked_caption, checked_text, inline_markup
from .wire import Handler, JSONDict, UploadedFile, bad

# The Bot API documents answerCallbackQuery's text as 0-200 characters; past that Telegram answers
# "Bad Request: MESSAGE_TOO_LONG" (quoted from a real answer in eternnoir/pyTelegramBotAPI issue #500).
_MAX_CALLBACK_ANSWER: Final = 200
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
_NOT_MODIFIED: Final = (
    "message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)


class MessagesMixin(ChatsMixin, FilesMixin):
    """Answer the sending and editing methods, keeping each chat's history as Telegram would show it."""

    def _setup_state(self) -> None:
        """Number albums from one."""
        super()._setup_state()
        self._media_group_counter = itertools.count(1)

    def _handlers(self) -> dict[str, Handler]:
        """Answer the methods that send, edit, copy, forward and delete messages."""
        return {
            **super()._handlers(),
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
        }

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """Return the chat's current messages, user's and bot's, oldest first, with edits applied."""
        return list(self._messages.get(chat_id, {}).values())

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
            raise bad("message to be replied not found")
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

    def _editable(self, p: JSONDict) -> JSONDict:
        """Find the bot's own message an edit targets."""
        chat_id = self._write_chat(p)
        msg = self._messages.get(chat_id, {}).get(p.get("message_id", 0))
        if msg is None:
            raise bad("message to edit not found")
        sender = msg.get("from")
        if sender is None or sender.get("id") != self.bot_id:
            raise bad("message can't be edited")
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

    async def _send_message(self, p: JSONDict) -> JSONDict:
        """Store and return a text message."""
        chat_id = self._write_chat(p)
        text = checked_text(p)
        markup = inline_markup(p)
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
            raise bad(f"there is no {kind} in the request")
        caption = checked_caption(p)
        markup = inline_markup(p)
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
            raise bad("media group must contain 2-10 items")
        items: list[tuple[str, Any, JSONDict]] = []
        # Everything is validated before the first message is stored, so a bad album leaves no trace.
        for item in media:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in ("photo", "video", "document", "audio") or not isinstance(item, dict):
                raise bad("unsupported media type in the group")
            ref = item.get("media")
            if isinstance(ref, str) and ref.startswith("attach://"):
                ref = p.get(ref.removeprefix("attach://"))
            if not isinstance(ref, UploadedFile) and not (isinstance(ref, str) and ref):
                raise bad(f"there is no {kind} in the request")
            checked_caption(item)
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
            raise bad("wrong latitude or longitude specified")
        markup = inline_markup(p)
        msg = self._bot_message(chat_id, p)
        msg["location"] = {"latitude": float(latitude), "longitude": float(longitude)}
        if markup is not None:
            msg["reply_markup"] = markup
        return dict(msg)

    async def _send_chat_action(self, p: JSONDict) -> bool:
        """Accept a typing/uploading indicator."""
        self._write_chat(p)
        if not p.get("action"):
            raise bad("action is empty")
        return True

    async def _copy_message(self, p: JSONDict) -> JSONDict:
        """Copy a message's content into a chat without a link to the original."""
        chat_id = self._write_chat(p)
        src = self._source_messages(p).get(p.get("message_id", 0))
        if src is None:
            raise bad("message to copy not found")
        caption = checked_caption(p) if "caption" in p else None
        markup = inline_markup(p)
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
            raise bad("message identifiers are not specified")
        if len(ids) > 100:
            raise bad("too many messages")
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
            raise bad("message to forward not found")
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
            checked_text(p)
            return True
        msg = self._editable(p)
        text = checked_text(p)
        if "text" not in msg:
            raise bad("there is no text in the message to edit")
        markup = inline_markup(p)
        entities = p.get("entities") or None
        if msg["text"] == text and msg.get("entities") == entities and msg.get("reply_markup") == markup:
            raise bad(_NOT_MODIFIED)
        msg["text"] = text
        self._set_or_drop(msg, "entities", entities)
        self._set_or_drop(msg, "reply_markup", markup)
        msg["edit_date"] = int(time.time())
        return dict(msg)

    async def _edit_message_caption(self, p: JSONDict) -> JSONDict | bool:
        """Replace a media message's caption."""
        caption = checked_caption(p)
        if p.get("inline_message_id"):
            return True
        msg = self._editable(p)
        if not any(key in msg for key in _MEDIA_KEYS):
            raise bad("there is no caption in the message to edit")
        markup = inline_markup(p)
        entities = p.get("caption_entities") or None
        if (
            msg.get("caption") == caption
            and msg.get("caption_entities") == entities
            and msg.get("reply_markup") == markup
        ):
            raise bad(_NOT_MODIFIED)
        self._set_or_drop(msg, "caption", caption)
        self._set_or_drop(msg, "caption_entities", entities)
        self._set_or_drop(msg, "reply_markup", markup)
        msg["edit_date"] = int(time.time())
        return dict(msg)

    async def _edit_message_reply_markup(self, p: JSONDict) -> JSONDict | bool:
        """Replace or remove a message's inline keyboard."""
        markup = inline_markup(p)
        if p.get("inline_message_id"):
            return True
        msg = self._editable(p)
        if msg.get("reply_markup") == markup:
            raise bad(_NOT_MODIFIED)
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
            raise bad("query is too old and response timeout expired or query ID is invalid")
        text = p.get("text")
        if isinstance(text, str) and len(text) > _MAX_CALLBACK_ANSWER:
            raise bad("MESSAGE_TOO_LONG")
        return True

    async def _delete_message(self, p: JSONDict) -> bool:
        """Delete one message, failing when it does not exist."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        messages = self._messages.get(chat_id, {})
        if messages.pop(p.get("message_id", 0), None) is None:
            raise bad("message to delete not found")
        return True

    async def _delete_messages(self, p: JSONDict) -> bool:
        """Delete whichever of the listed messages exist."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        messages = self._messages.get(chat_id, {})
        for message_id in self._message_ids(p):
            messages.pop(message_id, None)
        return True
