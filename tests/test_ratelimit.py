"""The send limiter under a fake clock: no window ever holds more than the configured rate."""

from __future__ import annotations

from bot.clock import FakeClock
from bot.services.ratelimit import SendLimiter


def _limiter(clock: FakeClock, *, overall: float = 30, private: float = 1, group: float = 20) -> SendLimiter:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return SendLimiter(clock, global_per_s=overall, private_per_s=private, group_per_min=group, sleep=sleep)


def _max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_overall_rate_never_exceeds_the_cap_in_any_second() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    times = []
    for i in range(300):
        await limiter.acquire(f"chat-{i}", "private")
        times.append(clock.monotonic())
    assert _max_in_window(times, 1.0) <= 30
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.95 * 30


async def test_private_chat_gets_at_most_one_message_a_second() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    times = []
    for _ in range(10):
        await limiter.acquire("one-person", "private")
        times.append(clock.monotonic())
    assert _max_in_window(times, 1.0) == 1


async def test_group_gets_at_most_twenty_a_minute() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    times = []
    for _ in range(50):
        await limiter.acquire("coordinators", "group")
        times.append(clock.monotonic())
    assert _max_in_window(times, 60.0) == 20
    assert times[19] - times[0] < 2  # a short burst is allowed within the minute


async def test_retry_after_pauses_every_send_exactly_as_long_as_asked() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    await limiter.acquire("a", "private")
    paused_at = clock.monotonic()
    limiter.pause(7)
    await limiter.acquire("b", "private")
    assert abs(clock.monotonic() - (paused_at + 7)) < 1e-9


async def test_no_cap_means_no_waiting() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, overall=0)
    start = clock.monotonic()
    for i in range(1000):
        await limiter.acquire(f"c{i}", "private")
    assert clock.monotonic() == start


async def test_quiet_chats_are_forgotten() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, overall=0)
    for i in range(1000):
        limiter.record(f"c{i}", "private", clock.monotonic())
    clock.advance(120)
    limiter.record("fresh", "private", clock.monotonic())
    assert len(limiter._chats) == 1
