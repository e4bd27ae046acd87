"""Per-person allowances counted in memory only, for actions whose record would identify someone."""

from __future__ import annotations

from collections import deque

from bot.runtime.clock import Clock


class Allowance:
    """At most `limit` actions per person within `window_s`, forgotten on restart.

    A row saying "this pseudonym submitted at 14:02:07" beside an anonymous report received at 14:02:07 would
    name its author to anyone holding the disk. Kept in memory, the count dies with the process: a restart
    gives a fresh allowance, which costs little next to the flood guard and the per-hour cap it backs up.
    """

    def __init__(self, clock: Clock, limit: int, window_s: float = 3600.0) -> None:
        self._clock = clock
        self._limit = limit
        self._window_s = window_s
        self._spent: dict[str, deque[float]] = {}

    def left(self, who: str) -> int:
        """How many actions this person may still take now."""
        times = self._spent.get(who)
        if times is None:
            return self._limit
        self._expire(who, times)
        return max(0, self._limit - len(times))

    def spend(self, who: str) -> None:
        """Count one action."""
        self._spent.setdefault(who, deque()).append(self._clock.monotonic())
        if len(self._spent) > 10_000:
            for person in list(self._spent):
                self._expire(person, self._spent[person])

    def _expire(self, who: str, times: deque[float]) -> None:
        horizon = self._clock.monotonic() - self._window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            self._spent.pop(who, None)
