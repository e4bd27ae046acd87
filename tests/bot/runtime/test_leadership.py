"""Leadership: one holder of a named lease, renewed while alive, taken over once it stops renewing."""

from __future__ import annotations

import pytest

from bot.runtime.clock import FakeClock
from bot.runtime.leadership import Leadership
from storage.database import Database
from storage.leases import LeaseRepository


def leadership(db: Database, clock: FakeClock, holder: str) -> Leadership:
    return Leadership(db=db, repo=LeaseRepository(), clock=clock, name="poller", holder=holder)


async def test_a_standby_takes_over_only_after_the_lease_lapses(db: Database, clock: FakeClock) -> None:
    first, second = leadership(db, clock, "a"), leadership(db, clock, "b")
    assert await first.step()
    assert not await second.step()
    assert first.is_leader and not second.is_leader
    clock.advance(10)  # the first stops renewing (killed)
    assert not await second.step()
    clock.advance(6)
    # The old leader counts itself out before its lease can have expired in the database.
    assert not first.is_leader
    assert await second.step()
    assert not await first.step()


async def test_renewals_keep_the_lease(db: Database, clock: FakeClock) -> None:
    first, second = leadership(db, clock, "a"), leadership(db, clock, "b")
    for _ in range(10):
        assert await first.step()
        clock.advance(5)
        assert not await second.step()
    assert first.is_leader


async def test_a_release_hands_over_at_the_next_try(db: Database, clock: FakeClock) -> None:
    first, second = leadership(db, clock, "a"), leadership(db, clock, "b")
    assert await first.step()
    await first.release()
    assert not first.is_leader
    assert await second.step()


async def test_stepping_down_leaves_the_lease_to_others_for_a_while(db: Database, clock: FakeClock) -> None:
    first, second = leadership(db, clock, "a"), leadership(db, clock, "b")
    assert await first.step()
    await first.step_down()
    assert not await first.step()  # does not ask during the pause
    assert await second.step()


async def test_always_is_leader_without_a_table(clock: FakeClock) -> None:
    lone = Leadership(
        db=None,  # type: ignore[arg-type]  # never touched
        repo=LeaseRepository(),
        clock=clock,
        name="poller",
        holder="a",
        always=True,
    )
    assert await lone.step() and lone.is_leader
    await lone.wait_leader()


def test_a_lease_must_outlast_its_renewal(db: Database, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="renewed"):
        Leadership(db=db, repo=LeaseRepository(), clock=clock, name="x", holder="a", lease_s=5, renew_s=5)
