"""Which event loop runs the bot: uvloop where it is installed, else the standard one.

Most of an update's CPU is the event loop and its transports, not jarchy: the HTTP calls to the Bot API,
the trips to SQLite's thread, the tasks they wake. uvloop (libuv, in C) does the same work with about a sixth
less CPU per update on this project's benchmarks (bench/alert_latency.py; README, "Performance").
JARCHY_EVENT_LOOP=asyncio keeps the standard loop: for a platform uvloop does not support, or to rule it out
when something misbehaves.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for asyncio.Runner: uvloop's for "auto" when it can be imported, else None
    (the standard loop)."""
    if choice == "asyncio" or importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop
