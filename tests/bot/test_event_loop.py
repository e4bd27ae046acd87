"""The bot's event loop: uvloop unless told otherwise."""

from __future__ import annotations

import asyncio

import uvloop

from bot.event_loop import event_loop_factory


def test_auto_runs_the_bot_on_uvloop() -> None:
    factory = event_loop_factory("auto")
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        assert runner.run(asyncio.sleep(0, "ran")) == "ran"


def test_asyncio_keeps_the_standard_loop() -> None:
    assert event_loop_factory("asyncio") is None
