"""Limits and faults: global and per-chat flood windows (429 with retry_after), fail_next, timeout_next."""

from __future__ import annotations

import bisect
import contextlib
import math
from collections import deque
from dataclasses import dataclass
from typing import Final

from .state import FakeBotState
from .wire import ApiError, JSONDict, error_payload, worded

# Telegram's flood windows: per group a minute, per private chat a second (or 1/rate for slower rates).
_GROUP_WINDOW: Final = 60.0
_PRIVATE_WINDOW: Final = 1.0


@dataclass(slots=True)
class _Fault:
    """One queued fail_next answer."""

    status: int
    description: str


@dataclass(slots=True)
class _Stall:
    """One queued timeout_next stall."""

    delay: float
    deliver: bool


class LimitsMixin(FakeBotState):
    """Refuse calls the way Telegram's flood control and a flaky network would."""

    def _setup_state(self) -> None:
        """Start with no limit and no fault."""
        super()._setup_state()
        self.request_delay = 0.0
        self.rate_limit_retry_after = 1
        self.received_429 = 0
        # The 429s of calls that named a chat, by numeric chat id (whichever window refused them).
        self.received_429_by_chat: dict[int, int] = {}
        self._rate_limit: float | None = None
        self._rate_window: deque[float] = deque()
        # (events admitted per window, window length in seconds), None while that limit is off.
        self._group_rule: tuple[int, float] | None = None
        self._private_rule: tuple[int, float] | None = None
        self._chat_retry_after: int | None = None
        # chat_id -> admission times inside the chat's current window, oldest first.
        self._chat_windows: dict[int, list[float]] = {}
        self._chat_outages: dict[int, _Fault] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._stalls: dict[str, deque[_Stall]] = {}

    def set_rate_limit(self, per_second: float | None, *, retry_after: int | None = None) -> None:
        """Answer 429 once sending methods exceed `per_second` within any sliding second; None disables."""
        self._rate_limit = per_second
        self._rate_window.clear()
        if retry_after is not None:
            self.rate_limit_retry_after = max(1, int(retry_after))

    def fail_next(
        self, method: str, times: int = 1, *, status: int = 500, description: str = "Internal Server Error"
    ) -> None:
        """Make the next `times` calls of `method` fail with `status`."""
        description = worded(status, description, "Internal Server Error")
        queue = self._faults.setdefault(method.lower(), deque())
        queue.extend(_Fault(status, description) for _ in range(times))

    def timeout_next(self, method: str, times: int = 1, *, delay: float = 30.0, deliver: bool = True) -> None:
        """Make the next `times` calls of `method` go unanswered for `delay` seconds."""
        queue = self._stalls.setdefault(method.lower(), deque())
        queue.extend(_Stall(delay, deliver) for _ in range(times))

    def set_chat_limits(
        self,
        *,
        group_per_min: int | None = None,
        private_per_s: float | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Enforce Telegram's per-chat flood windows on the sending and editing methods.

        Groups, supergroups and channels (negative ids, "@channel") admit `group_per_min` calls
        per sliding minute; private chats `private_per_s` per sliding second, or one call per
        1/`private_per_s` seconds below one a second. A refused call gets 429 with retry_after
        the whole seconds until the chat's oldest call leaves its window, or `retry_after` when
        given. None turns a limit off; every call replaces all three settings and empties the
        windows. set_rate_limit's global window still applies on top.
        """
        if group_per_min is not None and group_per_min < 1:
            raise ValueError("group_per_min must be at least 1")
        if private_per_s is not None and not private_per_s > 0:
            raise ValueError("private_per_s must be positive")
        self._group_rule = None if group_per_min is None else (int(group_per_min), _GROUP_WINDOW)
        if private_per_s is None:
            self._private_rule = None
        elif private_per_s >= 1:
            self._private_rule = (max(1, math.floor(private_per_s)), _PRIVATE_WINDOW)
        else:
            self._private_rule = (1, 1.0 / private_per_s)
        self._chat_retry_after = None if retry_after is None else max(1, int(retry_after))
        self._chat_windows.clear()

    def fail_chat(self, chat_id: int, status: int = 502, description: str = "Bad Gateway") -> None:
        """Answer every write into `chat_id` with `status` until heal_chat; 502/504 come as plain text."""
        self._chat_outages[chat_id] = _Fault(status, worded(status, description, "Bad Gateway"))

    def heal_chat(self, chat_id: int) -> None:
        """End a fail_chat outage."""
        self._chat_outages.pop(chat_id, None)

    def _fault_payload(self, fault: _Fault) -> JSONDict:
        """Build the answer of a queued or per-chat fault; a 429 carries retry_after like Telegram's."""
        if fault.status != 429:
            return error_payload(fault.status, fault.description)
        retry = self.rate_limit_retry_after
        description = fault.description
        if description == "Too Many Requests":
            description = f"Too Many Requests: retry after {retry}"
        return error_payload(429, description, {"retry_after": retry})

    def _target_chat(self, p: JSONDict) -> int | None:
        """Return the numeric chat a call writes into, or None when it names none usable."""
        raw = p.get("chat_id")
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.startswith("@"):
            with contextlib.suppress(ApiError):
                return self._resolve_chat_id(raw)
        return None

    def _admit(self, now: float, chat_id: int | None) -> int | None:
        """Apply the global and per-chat sliding windows; return retry_after for a refused call.

        A refused call enters no window, so it never delays the calls after it.
        """
        retry = 0
        limit = self._rate_limit
        window = self._rate_window
        if limit is not None:
            cutoff = now - 1.0
            while window and window[0] <= cutoff:
                window.popleft()
            if len(window) + 1 > limit:
                retry = self.rate_limit_retry_after
        rule = None if chat_id is None else self._group_rule if chat_id < 0 else self._private_rule
        events: list[float] | None = None
        if rule is not None and chat_id is not None:
            capacity, length = rule
            events = self._chat_windows.setdefault(chat_id, [])
            expired = bisect.bisect_right(events, now - length)
            if expired:
                del events[:expired]
            if len(events) >= capacity:
                wait = self._chat_retry_after
                if wait is None:
                    # The next call fits once the oldest of the window's calls has left it.
                    wait = max(1, math.ceil(events[-capacity] + length - now))
                retry = max(retry, wait)
                events = None
        if retry:
            return retry
        if limit is not None:
            window.append(now)
        if events is not None:
            events.append(now)
        return None
