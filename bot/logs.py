"""Logging set up once, in main: no token, no message text, no Telegram ids at production levels."""

from __future__ import annotations

import logging
import re
import sys

# Libraries that log request URLs (which carry the bot token) or request bodies at INFO or DEBUG.
_QUIET = ("httpx", "httpcore", "telegram", "apscheduler", "aiosqlite", "alembic", "hpack")


# Bot API URLs carry a token, whichever bot's: .../bot<token>/<method> and .../file/bot<token>/<path>.
_TOKEN_IN_URL = re.compile(r"/bot[^/\s'\"]+")
# A token on its own, as python-telegram-bot quotes it in InvalidToken: <bot id>:<secret>.
_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}")


class RedactSecrets(logging.Filter):
    """Replace secrets in any record that reaches a handler, traceback included, as a last line of defence."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message (and the traceback) once and scrub them."""
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            # The formatter prints exc_text when it is set: the traceback is rendered here, scrubbed.
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True

    def scrub(self, text: str) -> str:
        """Return `text` with every known secret and every token-shaped string replaced."""
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return _TOKEN.sub("<redacted>", _TOKEN_IN_URL.sub("/bot<redacted>", text))


_FORMATTER = logging.Formatter()


def configure_logging(level: str, secrets: list[str]) -> None:
    """Log to stderr at `level`; chatty libraries at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
