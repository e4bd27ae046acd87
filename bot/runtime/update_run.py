"""The update being handled right now, so gated actions can make sure they happen once per update.

Telegram's update_id names one user action. A handler can run again for the same update: a reply timed
out and the update was retried, or the process stopped after the action committed but before the update
was marked done. The n-th gated action of a run is recorded with the update in the action's own
transaction; a later run of the same update finds it there and does not act again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from bot.domain.errors import JarchyError, Unavailable
from storage.database import is_transient


@dataclass
class UpdateRun:
    """One run of the handlers for one update."""

    update_id: int
    actions: int = 0  # gated actions begun so far in this run, in order
    committed: bool = False  # at least one of them committed: running the update again would repeat it


class AlreadyActed(JarchyError):
    """An earlier run of this update already committed this action; it is not done twice."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


_current: ContextVar[UpdateRun | None] = ContextVar("jarchy_update_run", default=None)


@contextmanager
def handling(update_id: int) -> Iterator[UpdateRun]:
    """Mark everything awaited inside as part of handling `update_id`."""
    run = UpdateRun(update_id)
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def current_run() -> UpdateRun | None:
    """Return the run of the update being handled, or None outside an update (jobs, the command line)."""
    return _current.get()


def may_pass_on_retry(error: BaseException) -> bool:
    """Tell whether running the update again may succeed: an Unavailable, or a busy, locked or full
    database."""
    return isinstance(error, Unavailable) or is_transient(error)
