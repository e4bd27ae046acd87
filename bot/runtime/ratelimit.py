"""One send limiter for the whole bot: never more than the cap in any window; a 429 pauses the chat it was
about, and everyone only when several chats hear one at once (then it is the bot's overall limit)."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable

from bot.runtime.clock import Clock

# Sends are recorded when they leave; arrival at Telegram jitters by a few milliseconds, so the 1-second
# window is widened a little to keep the strict server-side window from ever seeing one too many.
WINDOW_MARGIN_S = 0.025
# 429s for this many different chats within GLOBAL_429_WINDOW_S mean the overall limit, not one chat's.
GLOBAL_429_CHATS = 3
GLOBAL_429_WINDOW_S = 2.0
# Direct replies may take at most this share of the overall rate: hundreds of receipts at once must leave
# room for the alerts the delivery worker sends (measured: without it, no alert left for 7 s).
REPLY_SHARE = 2 / 3
# How often a reply waiting behind an SOS screen looks again (not a busy loop).
URGENT_YIELD_S = 0.05


class SlidingWindow:
    """At most `limit` events in any `window` seconds."""

    __slots__ = ("_events", "limit", "paused_until", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.paused_until = 0.0
        self._events: deque[float] = deque()

    def ready_at(self, now: float, headroom: int = 0) -> float:
        """Return the earliest time another event fits, leaving `headroom` slots of the window unused."""
        events = self._events
        while events and events[0] <= now - self.window:
            events.popleft()
        limit = max(1, self.limit - headroom)
        ready = now if len(events) < limit else events[-limit] + self.window
        return max(ready, self.paused_until)

    def used(self, now: float) -> list[float]:
        """Return the times of the events still in the window, oldest first."""
        return [at for at in self._events if at > now - self.window]

    def record(self, at: float) -> None:
        """Count an event."""
        self._events.append(at)
        if len(self._events) > self.limit:
            self._events.popleft()

    def idle_since(self, now: float) -> bool:
        """Tell whether the window has forgotten every event (and no pause holds)."""
        quiet = not self._events or self._events[-1] <= now - self.window
        return quiet and self.paused_until <= now


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
        self._urgent_replies = 0
        self._replies = (
            SlidingWindow(max(1, math.floor(global_per_s * REPLY_SHARE)), 1.0 + WINDOW_MARGIN_S)
            if global_per_s > 0
            else None
        )
        self._private_window = 1.0 / private_per_s if private_per_s > 0 else 0.0
        self._group_limit = math.floor(group_per_min)
        self._chats: dict[str, SlidingWindow] = {}
        self._sweep_at = 0.0
        self._recent_429: deque[tuple[float, str]] = deque()

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

    @property
    def group_limit(self) -> int:
        """Return the per-group limit in sends per minute (0 means none)."""
        return self._group_limit

    def pause(self, seconds: float) -> None:
        """Stop every send for as long as Telegram asked."""
        self._paused_until = max(self._paused_until, self._clock.monotonic() + seconds)

    def too_many(self, chat_key: str | None, chat_kind: str, seconds: float) -> bool:
        """Honour a 429: pause the chat it was about; pause everyone when several chats hear one at
        once (the overall limit). Return True when everyone was paused."""
        now = self._clock.monotonic()
        if chat_key is None:
            self.pause(seconds)
            return True
        window = self._chats.get(chat_key)
        if window is None:
            window = self._new_chat_window(chat_kind) or SlidingWindow(1_000_000, 1.0)
            self._chats[chat_key] = window
        window.paused_until = max(window.paused_until, now + seconds)
        recent = self._recent_429
        recent.append((now, chat_key))
        while recent and recent[0][0] < now - GLOBAL_429_WINDOW_S:
            recent.popleft()
        if len({key for _, key in recent}) >= GLOBAL_429_CHATS:
            self.pause(seconds)
            return True
        return False

    def chat_used(self, chat_key: str, now: float) -> list[float]:
        """Return when the sends still counted in this chat's window left, oldest first."""
        window = self._chats.get(chat_key)
        return [] if window is None else window.used(now)

    def global_ready_at(self, now: float) -> float:
        """Return the earliest time the overall limits allow a send."""
        ready = max(now, self._paused_until, self._next_global)
        if self._global is not None:
            ready = max(ready, self._global.ready_at(now))
        return ready

    def chat_ready_at(self, chat_key: str, chat_kind: str, now: float, headroom: int = 0) -> float:
        """Return the earliest time this chat's limit allows a send that leaves `headroom` slots."""
        window = self._chats.get(chat_key)
        return now if window is None else max(now, window.ready_at(now, headroom))

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

    async def acquire_reply(
        self, chat_key: str | None, chat_kind: str, *, wait_chat: bool, urgent: bool = False
    ) -> float:
        """Wait for a direct reply's turn: the overall limits, the replies' share of them, and (with
        `wait_chat`) the chat's own limit; count the send and return its time. Counted here, in the same
        step as the check: counted by the caller after a task switch, several replies could pass the
        same check (measured: 429s from bursts of replies). An `urgent` reply (an SOS screen) goes
        ahead of every other reply and needs no share."""
        if urgent:
            self._urgent_replies += 1
        try:
            return await self._acquire_reply(chat_key, chat_kind, wait_chat=wait_chat, urgent=urgent)
        finally:
            if urgent:
                self._urgent_replies -= 1

    async def _acquire_reply(
        self, chat_key: str | None, chat_kind: str, *, wait_chat: bool, urgent: bool
    ) -> float:
        while True:
            now = self._clock.monotonic()
            ready = self.global_ready_at(now)
            if not urgent and self._urgent_replies:
                await self._sleep(max(ready - now, URGENT_YIELD_S))
                continue
            if self._replies is not None and not urgent:
                ready = max(ready, self._replies.ready_at(now))
            if wait_chat and chat_key is not None:
                ready = max(ready, self.chat_ready_at(chat_key, chat_kind, now))
            if ready <= now:
                if self._replies is not None:
                    self._replies.record(now)
                self.record(chat_key, chat_kind, now)
                return now
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
