"""A per-person flood guard: one person sending hundreds of updates must not slow the bot for everyone."""

from __future__ import annotations

import enum
from collections import deque

from bot.domain.callbacks import NONCE_LENGTH, BadCallback, MenuPress, SosPress
from bot.runtime.clock import Clock

WINDOW_S = 60.0
_SOS_MENU = MenuPress.where(item="sos")
# A real SOS takes two updates (/sos, then its confirmation); a few more leave room for a retry.
URGENT_PER_MINUTE = 4


class Verdict(enum.Enum):
    """What to do with one update."""

    ALLOW = "allow"
    WARN = "warn"  # the first update over the limit: say so once
    DROP = "drop"  # the rest, until the window has room again: silence


class FloodGuard:
    """At most `per_minute` updates per person in any 60 seconds; kept in memory, keyed by pseudonym."""

    def __init__(self, clock: Clock, per_minute: int) -> None:
        self._clock = clock
        self._limit = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._warned: set[str] = set()
        self._urgent: dict[str, deque[float]] = {}
        self._sweep_at = 0.0

    def urgent(self, key: str) -> bool:
        """Count an SOS update from `key`; True while it is within the few a minute that skip the guard
        (a flood of forged SOS presses does not)."""
        now = self._clock.monotonic()
        times = self._urgent.setdefault(key, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) >= URGENT_PER_MINUTE:
            return False
        times.append(now)
        return True

    def check(self, key: str) -> Verdict:
        """Count an update from `key` and say whether to handle it."""
        now = self._clock.monotonic()
        if now >= self._sweep_at:
            self._sweep(now)
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) < self._limit:
            times.append(now)
            self._warned.discard(key)
            return Verdict.ALLOW
        if key in self._warned:
            return Verdict.DROP
        self._warned.add(key)
        return Verdict.WARN

    def _sweep(self, now: float) -> None:
        # Forget people who have been quiet for a whole window, so memory follows current activity.
        self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - WINDOW_S}
        self._urgent = {k: v for k, v in self._urgent.items() if v and v[-1] > now - WINDOW_S}
        self._warned &= set(self._seen)
        self._sweep_at = now + WINDOW_S


def is_sos(data: str | None, text: str | None) -> bool:
    """Tell whether a button press (its data) or a message (its text) starts or sends an SOS."""
    if data is not None:
        return _SOS_MENU(data) or _sends_sos(data)
    return (text or "").split("@")[0].strip() == "/sos"


def _sends_sos(data: str) -> bool:
    # Only a well-formed confirmation, with a nonce as the bot makes them, gets past a flood.
    try:
        press = SosPress.unpack(data)
    except BadCallback:
        return False
    return press.action == "go" and len(press.draft) == NONCE_LENGTH
