"""A person in a private chat with the bot, tapping and typing through the fake Bot API."""

from __future__ import annotations

from typing import Any

from tests.fakebot import FakeBotApi

# The report tests' admin and coordinators' chat (see tests/e2e/reporting.py's report_settings).
ADMIN = 5001
COORDINATORS = -100777


class Person:
    """One person in a private chat with the bot."""

    def __init__(self, fake: FakeBotApi, user_id: int, language: str = "en") -> None:
        self.fake = fake
        self.user_id = user_id
        self.language = language

    def bot_messages(self) -> list[dict[str, Any]]:
        """The bot's messages still in the chat (edits applied, deletions gone)."""
        return [m for m in self.fake.chat_messages(self.user_id) if (m.get("from") or {}).get("is_bot")]

    def keyboard_message(self) -> dict[str, Any]:
        """The newest bot message with buttons."""
        for message in reversed(self.bot_messages()):
            if (message.get("reply_markup") or {}).get("inline_keyboard"):
                found: dict[str, Any] = message
                return found
        raise AssertionError("no message with buttons")

    def buttons(self) -> list[str]:
        """Callback data of the newest keyboard."""
        markup = self.keyboard_message()["reply_markup"]["inline_keyboard"]
        return [button["callback_data"] for row in markup for button in row]

    def last_text(self) -> str:
        """Text of the bot's newest message."""
        return str(self.bot_messages()[-1].get("text", ""))

    async def tap(self, action: str, arg: str = "", *, prefix: str = "r", timeout: float = 15.0) -> None:
        """Press the button of the newest keyboard with this action and wait until it is handled."""
        message = self.keyboard_message()
        for data in self.buttons():
            parts = data.split(":")
            if parts[0] != prefix:
                continue
            if (prefix == "r" and parts[3] == action and parts[4] == arg) or (
                prefix != "r" and parts[-1] == action
            ):
                await self.press(data, message["message_id"], timeout)
                return
        raise AssertionError(f"no button {action}:{arg} in {self.buttons()}")

    async def press(self, data: str, message_id: int, timeout: float = 15.0) -> None:
        """Press a button by its callback data and wait for the answer."""
        update = self.fake.add_callback_query(
            user_id=self.user_id, data=data, message_id=message_id, language_code=self.language
        )
        query_id = str(update["callback_query"]["id"])
        await self.fake.wait_for(
            "answerCallbackQuery",
            timeout=timeout,
            predicate=lambda c: str(c.params.get("callback_query_id")) == query_id,
        )

    async def say(self, text: str | None = None, timeout: float = 15.0, **message: Any) -> dict[str, Any]:
        """Send a message and wait for the bot's reply; return the reply's parameters."""
        before = len(self.fake.sent("sendMessage", chat_id=self.user_id))
        self.fake.add_message(user_id=self.user_id, text=text, language_code=self.language, **message)
        calls = await self.fake.wait_for(
            "sendMessage", chat_id=self.user_id, count=before + 1, timeout=timeout
        )
        return calls[-1].params

    def answers(self) -> list[str]:
        """Texts of callback answers (toasts and alerts) so far, to anyone."""
        return [str(c.params.get("text", "")) for c in self.fake.sent("answerCallbackQuery")]
