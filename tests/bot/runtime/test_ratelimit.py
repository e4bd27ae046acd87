"""The send limiter under a fake clock: no window ever holds more than the configured rate."""

from __future__ import annotations

from bot.runtime.clock import FakeClock
from bot.runtime.ratelimit import SendLimiter


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


async def test_a_429_pauses_its_chat_and_several_at_once_pause_everyone() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    assert limiter.too_many("group-a", "group", 5.0) is False
    now = clock.monotonic()
    assert limiter.chat_ready_at("group-a", "group", now) == now + 5.0
    assert limiter.global_ready_at(now) == now, "other chats go on"
    limiter.too_many("group-b", "group", 3.0)
    assert limiter.too_many("person-c", "private", 3.0) is True, "three chats at once: the overall limit"
    assert limiter.global_ready_at(now) == now + 3.0


async def test_headroom_keeps_the_last_slots_of_a_group_window() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, group=20)
    for _ in range(10):
        limiter.record("coordinators", "group", clock.monotonic())
    now = clock.monotonic()
    assert limiter.chat_ready_at("coordinators", "group", now, headroom=10) > now
    assert limiter.chat_ready_at("coordinators", "group", now, headroom=4) == now
    assert len(limiter.chat_used("coordinators", now)) == 10


async def test_direct_replies_into_a_group_wait_for_its_slots() -> None:
    from bot.send_limits import SharedRateLimiter

    clock = FakeClock()
    limiter = _limiter(clock, group=2)
    shared = SharedRateLimiter(limiter, lambda chat: f"chat:{chat}")
    sent: list[float] = []

    async def send() -> bool:
        sent.append(clock.monotonic())
        return True

    for _ in range(3):
        await shared.process_request(send, (), {}, "sendMessage", {"chat_id": -100777}, None)
    assert sent[2] - sent[0] >= 60.0, "the third waited for the group's window"
    # Into a private chat a form's replies are not slowed to one a second.
    for _ in range(3):
        await shared.process_request(send, (), {}, "sendMessage", {"chat_id": 42}, None)
    assert sent[-1] - sent[-3] < 1.0
