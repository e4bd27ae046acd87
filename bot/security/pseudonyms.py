"""Keyed pseudonyms: the database knows people only by an HMAC of their Telegram id."""

from __future__ import annotations

import hashlib
import hmac

from bot.security.keys import DataKey


class Pseudonymizer:
    """HMAC-SHA256 of a Telegram id under a key that is not in the database.

    Without the key, a seized database cannot be joined to Telegram ids by hashing all possible ids,
    which an unkeyed hash would allow in minutes.
    """

    def __init__(self, key: DataKey) -> None:
        self._key = key.derive("pseudonym")

    def of_user(self, telegram_id: int) -> str:
        """Return the pseudonym of a Telegram user."""
        return self._digest(f"user:{telegram_id}")

    def of_chat(self, chat_id: int | str) -> str:
        """Return the pseudonym of a chat (used to pace sends per chat without storing its id)."""
        return self._digest(f"chat:{chat_id}")

    def of_submission(self, nonce: str) -> str:
        """Return the key a submitted draft is remembered by (its nonce, keyed: see ReportService.submit)."""
        return self._digest(f"submit:{nonce}")

    def _digest(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()[:32]
