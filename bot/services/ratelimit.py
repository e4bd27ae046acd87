"""One send limiter for the whole bot: never more than the cap in any window, and 429 pauses everyone."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable

from bot.clock import Clock

# Sends are recorded when they leave; arrival at Telegram jitters by a few milliseconds, so the 1-second
# window is widened a little to keep the strict server-side window from ever seeing one too many.
WINDOW_MARGIN_S = 0.025


class SlidingWindow:
    """At most `limit` events in any `window` seconds."""

    __slots__ = ("_events", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: deque[float] = deque()

    def ready_at(self, now: float) -> float:
        """Return the earliest time another event fits."""
        events = self._events
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < self.limit:
            return now
        return events[-self.limit] + self.window

    def record(self, at: float) -> None:
        """Count an event."""
        self._events.append(at)
        if len(self._events) > self.limit:
            self._events.popleft()

    def idle_since(self, now: float) -> bool:
        """Tell whether the window has forgotten every event."""
        return not self._events or self._events[-1] <= now - self.window


class SendLimiter:
    """Paces sends: an overall rate (spaced evenly), a per-private-chat rate and a per-group rate.

    A limiter that allows a burst of the full rate sees about twice the rate in the first second under a
    strict sliding window (shared/PERF-NOTES.md); spacing sends by 1/rate and checking a sliding window
    gives no 429s at close to the full rate.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        global_per_s: float,
        private_per_s: float,
        group_per_min: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._rate = max(global_per_s, 0.0)
        # Paced a little under the cap, so the one-second window (widened by the same margin) never fills.
        self._spacing = (1.0 + WINDOW_MARGIN_S) / global_per_s if global_per_s > 0 else 0.0
        self._global = (
            SlidingWindow(max(1, math.floor(global_per_s)), 1.0 + WINDOW_MARGIN_S)
            if global_per_s > 0
            else None
        )
        self._next_global = 0.0
        self._paused_until = 0.0
        self._private_window = 1.0 / private_per_s if private_per_s > 0 else 0.0
        self._group_limit = math.floor(group_per_min)
        self._chats: dict[str, SlidingWindow] = {}
        self._sweep_at = 0.0

    @property
    def global_rate(self) -> float:
        """Return the overall cap in sends per second (0 means none)."""
        return self._rate

    @property
    def paused_until(self) -> float:
        """Return the monotonic time until which Telegram asked us to stop (429)."""
        return self._paused_until

    def now(self) -> float:
        """Return the limiter's clock (monotonic seconds)."""
        return self._clock.monotonic()

    def pause(self, seconds: float) -> None:
        """Stop every send for as long as Telegram asked."""
        self._paused_until = max(self._paused_until, self._clock.monotonic() + seconds)

    def global_ready_at(self, now: float) -> float:
        """Return the earliest time the overall limits allow a send."""
        ready = max(now, self._paused_until, self._next_global)
        if self._global is not None:
            ready = max(ready, self._global.ready_at(now))
        return ready

    def chat_ready_at(self, chat_key: str, chat_kind: str, now: float) -> float:
        """Return the earliest time this chat's limit allows a send."""
        window = self._chats.get(chat_key)
        return now if window is None else max(now, window.ready_at(now))

    def record(self, chat_key: str | None, chat_kind: str, at: float) -> None:
        """Count a send that is leaving now (chat_key None: count it against the overall rate only)."""
        # Keep to the schedule: asyncio wakes a little late (a millisecond, rounded up), and counting the
        # spacing from each late departure would lose that much on every send, about 12% at 300/s.
        late = at - self._next_global
        base = self._next_global if 0 <= late < self._spacing else at
        self._next_global = base + self._spacing
        if self._global is not None:
            self._global.record(at)
        if chat_key is None:
            return
        window = self._chats.get(chat_key)
        if window is None:
            window = self._new_chat_window(chat_kind)
            if window is None:
                return
            self._chats[chat_key] = window
        window.record(at)
        if at >= self._sweep_at:
            self._sweep(at)

    async def acquire(self, chat_key: str, chat_kind: str) -> None:
        """Wait until a send to this chat is allowed, then count it."""
        while True:
            now = self._clock.monotonic()
            ready = max(self.global_ready_at(now), self.chat_ready_at(chat_key, chat_kind, now))
            if ready <= now:
                self.record(chat_key, chat_kind, now)
                return
            await self._sleep(ready - now)

    async def acquire_global(self) -> float:
        """Wait for the overall limits only; return the time it is allowed (the caller records the send)."""
        while True:
            now = self._clock.monotonic()
            ready = self.global_ready_at(now)
            if ready <= now:
                return now
            await self._sleep(ready - now)

    def _new_chat_window(self, chat_kind: str) -> SlidingWindow | None:
        if chat_kind == "private":
            return (
                SlidingWindow(1, self._private_window + WINDOW_MARGIN_S) if self._private_window > 0 else None
            )
        return SlidingWindow(self._group_limit, 60.0 + WINDOW_MARGIN_S) if self._group_limit > 0 else None

    def _sweep(self, now: float) -> None:
        # Forget chats that have been quiet for a whole window so a broadcast to 100,000 people does not
        # keep 100,000 windows in memory.
        self._chats = {key: w for key, w in self._chats.items() if not w.idle_since(now)}
        self._sweep_at = now + 60.0
