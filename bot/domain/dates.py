"""How a date or time is written for a person: every screen, card and reminder formats through here.

Day first with dots and a 24-hour clock read the same way in Russian, Kyrgyz, Uzbek and to the English
speakers jarchy serves, so the form does not depend on the language, only on the zone it is shown in.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

_DAY = "%d.%m.%Y"
_CLOCK = "%H:%M"


def moment(value: datetime, zone: ZoneInfo) -> str:
    """Return '31.12.2025 18:30' in the given zone: a deadline, a schedule, an expiry."""
    return value.astimezone(zone).strftime(f"{_DAY} {_CLOCK}")


def day(value: datetime, zone: ZoneInfo) -> str:
    """Return '31.12.2025' in the given zone."""
    return value.astimezone(zone).strftime(_DAY)


def clock(value: datetime, zone: ZoneInfo) -> str:
    """Return '18:30' in the given zone: a line within one running thread, such as an SOS's updates."""
    return value.astimezone(zone).strftime(_CLOCK)


def recent(value: datetime, zone: ZoneInfo) -> str:
    """Return '31.12 18:30' in the given zone: a moment of the last days, where the year only adds noise."""
    return value.astimezone(zone).strftime(f"%d.%m {_CLOCK}")


def since(value: datetime, now: datetime, zone: ZoneInfo) -> str:
    """Return the time alone if `value` falls on today's date in `zone`, else the recent form."""
    local = value.astimezone(zone)
    return clock(local, zone) if local.date() == now.astimezone(zone).date() else recent(local, zone)


def occurred(value: datetime, zone: ZoneInfo, precision: str | None) -> str:
    """Return when something happened as precisely as the reporter said it: the day alone for 'date'."""
    return day(value, zone) if precision == "date" else moment(value, zone)


def week(monday: date) -> str:
    """Return '29.12' for a chart's week, named by its Monday."""
    return monday.strftime("%d.%m")


def utc_moment(value: datetime) -> str:
    """Return '2025-12-31 18:30 UTC': a record's time that people compare across servers and zones."""
    return value.astimezone(UTC).strftime(f"%Y-%m-%d {_CLOCK} UTC")


def file_stamp(value: datetime) -> str:
    """Return '20251231-1830' (UTC) for a file name that sorts by time."""
    return value.astimezone(UTC).strftime("%Y%m%d-%H%M")
