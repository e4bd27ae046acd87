"""The flood guard: a limit per person per minute, one warning, then silence until there is room."""

from __future__ import annotations

from bot.runtime.clock import FakeClock
from bot.runtime.flood import FloodGuard, Verdict


def test_a_person_over_the_limit_is_warned_once_then_dropped() -> None:
    clock = FakeClock()
    guard = FloodGuard(clock, per_minute=5)
    assert [guard.check("a") for _ in range(5)] == [Verdict.ALLOW] * 5
    assert guard.check("a") is Verdict.WARN
    assert guard.check("a") is Verdict.DROP
    assert guard.check("b") is Verdict.ALLOW  # someone else is not affected
    clock.advance(61)
    assert guard.check("a") is Verdict.ALLOW


def test_quiet_people_are_forgotten() -> None:
    clock = FakeClock()
    guard = FloodGuard(clock, per_minute=5)
    for person in range(1000):
        guard.check(str(person))
    clock.advance(120)
    guard.check("new")
    assert len(guard._seen) == 1


def test_only_a_few_sos_a_minute_skip_the_guard() -> None:
    clock = FakeClock()
    guard = FloodGuard(clock, per_minute=5)
    # A real SOS is two updates; a flood of presses with the SOS prefix gets a few, then the usual limit.
    assert [guard.urgent("a") for _ in range(6)] == [True] * 4 + [False] * 2
    assert guard.urgent("b") is True
    clock.advance(61)
    assert guard.urgent("a") is True
