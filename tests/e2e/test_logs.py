"""Logs carry no token, no message text and no Telegram ids, even at DEBUG."""

from __future__ import annotations

from pathlib import Path

from tests.fakebot import FakeBotApi
from tests.support.bots import BotProcess
from tests.support.settings import TEST_TOKEN

CANARY = "CANARY-zq81-detained-at-checkpoint"
USER_ID = 987654321
USERNAME = "activist_canary_user"


async def test_a_scenario_leaves_no_canary_in_the_logs(fake: FakeBotApi, tmp_path: Path) -> None:
    log_file = tmp_path / "bot.log"
    bot = BotProcess(fake, tmp_path / "data", output=log_file, log_level="DEBUG")
    await bot.start()
    try:
        await fake.wait_for("getUpdates", timeout=30)
        fake.add_message(user_id=USER_ID, username=USERNAME, text="/start", language_code="ru")
        fake.add_message(user_id=USER_ID, username=USERNAME, text=CANARY)
        fake.add_message(user_id=USER_ID, username=USERNAME, text=f"/{CANARY}")
        fake.add_callback_query(user_id=USER_ID, data=CANARY, message_id=1)
        # A failing send: the error path logs too.
        fake.fail_next("sendMessage", 1, status=400, description=f"Bad Request: {CANARY}")
        fake.add_message(user_id=USER_ID, username=USERNAME, text="/help")
        await fake.wait_for("sendMessage", chat_id=USER_ID, count=3, timeout=30)
        await fake.wait_for("answerCallbackQuery", timeout=30)
    finally:
        await bot.stop()
    logs = log_file.read_text(errors="replace").lower()
    assert "jarchy is running" in logs  # the capture works
    assert "badrequest" in logs  # the failing send was logged, without its description
    for secret in (CANARY, str(USER_ID), USERNAME, TEST_TOKEN, TEST_TOKEN.split(":")[1]):
        assert secret.lower() not in logs, f"{secret!r} leaked into the logs"
