"""No log line shows a bot token: not in a message, an argument, a URL or a traceback."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bot.logs import RedactSecrets

TOKEN = "123456:TEST-TOKEN"
OTHER = "7654321:AAHbackupBotSecretValue0123456789abcd"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records go through the filter into a string, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets([TOKEN]))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_the_configured_token_is_replaced_in_the_message_and_its_arguments(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.warning("token %s in an argument", TOKEN)
    logger.warning("token " + TOKEN + " in the text")
    assert TOKEN not in stream.getvalue()
    assert stream.getvalue().count("<redacted>") == 2


def test_a_bot_api_url_loses_its_token_whatever_the_bot(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("POST %s", f"https://api.telegram.org/bot{OTHER}/sendMessage")
    logger.info("GET %s", "http://127.0.0.1:8081/file/bot123:short/photos/file_1.jpg")
    out = stream.getvalue()
    assert OTHER not in out and "123:short" not in out
    assert "https://api.telegram.org/bot<redacted>/sendMessage" in out
    assert "/file/bot<redacted>/photos/file_1.jpg" in out


def test_a_token_quoted_in_a_traceback_is_replaced(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise RuntimeError(f"The token `{OTHER}` was rejected by the server.")
    except RuntimeError:
        logger.exception("start failed")
    out = stream.getvalue()
    assert "Traceback" in out and "was rejected by the server" in out
    assert OTHER not in out


def test_paths_of_the_code_itself_are_left_alone(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("in /work/jarchy/bot/runner.py line 12")
    assert "/work/jarchy/bot/runner.py" in stream.getvalue()
