"""The project's one error tree: what went wrong, by kind, so a caller catches a kind and not a list.

    JarchyError
     ├── Refused                a person's request is turned down; `key` (and `params`) name the reply
     │    ├── NotAllowed        no role for the action, or the wrong place for it
     │    ├── BadInput          unusable input: a form step, a hearing's time, HTML, a code, a language
     │    ├── LimitReached      too many reports, SOS or files in the window
     │    ├── NotFound          no such report, case, hearing or campaign
     │    └── Conflict          the state moved on: an old button, a hearing already at that time
     ├── Damaged                stored data fails an integrity check (a ciphertext, a file, a report)
     │    └── Tampered          ... in a way that only a changed row explains
     ├── Unavailable            a fault that may pass if the update runs again (a busy database)
     └── AlreadyActed           a retried update whose action an earlier run committed (bot.runtime)

A Refused raised inside the gate (bot.services.access.roles.Gate) is audited there; a handler turns any
Refused into its reply with `key` and `params`. Damaged and Unavailable are never a person's fault: they
reach the one error handler, which logs them and says something generic (or retries an Unavailable).

The concrete classes live next to what raises them (storage.reports.ReportNotFound, bot.domain.report_form.
FormError, …) and subclass a kind here; several also keep their old builtin base (LookupError, ValueError)
so code that caught that still does.
"""

from __future__ import annotations


class JarchyError(Exception):
    """Base of every error the project raises on purpose."""


class Refused(JarchyError):
    """A request turned down with an explanation; `key` names the text, `params` fill it."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


class NotAllowed(Refused):
    """The person lacks the role the action needs, or asked in the wrong place."""


class BadInput(Refused):
    """Input that cannot be used as it is; the reply says how to correct it."""


class LimitReached(Refused):
    """Too many of something in a window; the reply says how many and until when."""


class NotFound(Refused):
    """No record by that reference (or none the person may see: the two look alike)."""


class Conflict(Refused):
    """The request no longer fits the state: an expired button, a duplicate, a changed record."""


class Damaged(JarchyError):
    """Stored data fails an integrity check: never shown as it is, never silently repaired."""


class Tampered(Damaged):
    """Stored data changed in a way an honest write cannot explain."""


class Unavailable(JarchyError):
    """A fault that may pass if retried (a locked database, a full disk, a timeout)."""


__all__ = [
    "BadInput",
    "Conflict",
    "Damaged",
    "JarchyError",
    "LimitReached",
    "NotAllowed",
    "NotFound",
    "Refused",
    "Tampered",
    "Unavailable",
]
