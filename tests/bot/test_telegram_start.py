"""The waits between tries while Telegram cannot be reached at start, and what the operator reads."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from bot.telegram_start import TokenRefused, retry_delays, where
from tests.support.settings import make_settings


def test_the_wait_doubles_from_a_second_up_to_the_cap_with_jitter() -> None:
    delays = list(islice(retry_delays(60.0), 10))
    nominal = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    for delay, expected in zip(delays, nominal, strict=True):
        assert 0.8 * expected <= delay <= expected


def test_a_cap_below_a_second_is_the_first_wait_too() -> None:
    assert all(0.16 <= delay <= 0.2 for delay in islice(retry_delays(0.2), 5))


def test_the_jitter_spreads_bots_that_lost_telegram_together() -> None:
    firsts = {next(retry_delays(60.0)) for _ in range(20)}
    assert len(firsts) > 1


def test_a_refusal_names_the_setting_and_the_fix_on_one_line() -> None:
    message = str(TokenRefused("Unauthorized", "https://api.telegram.org"))
    assert "\n" not in message
    assert message.startswith("JARCHY_BOT_TOKEN: ")
    assert "@BotFather" in message and "Unauthorized" in message and "https://api.telegram.org" in message


def test_where_is_the_api_root_without_a_proxy_password(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url="https://relay:s3cret@tg.example.org/api")
    assert where(settings) == "https://tg.example.org/api"
    assert where(make_settings(tmp_path)) == "https://api.telegram.org"
