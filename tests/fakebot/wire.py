"""The Bot API's wire format: call records, files, Telegram-worded errors and parameter decoding."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

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
WRITE_METHODS: Final = RATE_LIMITED_METHODS | {
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
_ERROR_PREFIXES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
}
PLAIN_TEXT_STATUSES: Final = {502: "Bad Gateway", 504: "Gateway Timeout"}


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


class ApiError(Exception):
    """Abort a method with a Telegram-style error answer."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def bad(description: str) -> ApiError:
    """Build a 400 error the way Telegram words it."""
    return ApiError(400, f"Bad Request: {description}")


def error_payload(status: int, description: str, parameters: JSONDict | None = None) -> JSONDict:
    """Build the JSON body of a failed call."""
    payload: JSONDict = {"ok": False, "error_code": status, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return payload


def worded(status: int, description: str, default: str) -> str:
    """Word a fault's description the way Telegram would for its status."""
    prefix = _ERROR_PREFIXES.get(status) or PLAIN_TEXT_STATUSES.get(status)
    if description == default:
        # The default wording only fits its own status; other statuses get Telegram's own phrase.
        return prefix or ("Internal Server Error" if status == 500 else description)
    if prefix and not description.startswith(prefix):
        return f"{prefix}: {description}"
    return description


def normalise(raw: Mapping[str, Any]) -> JSONDict:
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
