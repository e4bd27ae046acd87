"""Logging set up once, in main: no token, no message text, no Telegram ids at production levels."""

from __future__ import annotations

import logging
import sys

# Libraries that log request URLs (which carry the bot token) or request bodies at INFO or DEBUG.
_QUIET = ("httpx", "httpcore", "telegram", "apscheduler", "aiosqlite", "alembic", "hpack")


class RedactSecrets(logging.Filter):
    """Replace secrets in any record that reaches a handler, as a last line of defence."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once and scrub it."""
        message = record.getMessage()
        if any(secret in message for secret in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "<redacted>")
            record.msg, record.args = message, None
        return True


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
