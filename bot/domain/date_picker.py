"""The inline date and time picker, as data: a month's grid of days, which days may be chosen, and the time
buttons. Pure, so month boundaries, leap days and zones are tested without Telegram; messages/ turns it
into a keyboard, and the chosen value is written as a typed time would be (bot.domain.commands)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from bot.domain.commands import TIME_FORMAT

HOURS: tuple[int, ...] = tuple(range(8, 20))  # court hours; anything else is typed
MINUTES: tuple[int, ...] = (0, 15, 30, 45)


@dataclass(frozen=True)
class Month:
    """One month of the picker: weeks from Monday, None outside the month."""

    year: int
    month: int

    @property
    def code(self) -> int:
        """yyyymm, as a button carries it."""
        return self.year * 100 + self.month

    @classmethod
    def of(cls, day: date) -> Month:
        """Return the month a day is in."""
        return cls(day.year, day.month)

    @classmethod
    def from_code(cls, code: int) -> Month | None:
        """Return the month of a yyyymm code, None if it names none."""
        year, month = divmod(code, 100)
        return cls(year, month) if 1 <= month <= 12 and 1900 < year < 10000 else None

    def shift(self, months: int) -> Month:
        """Return the month `months` later (earlier if negative)."""
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def weeks(self) -> list[list[date | None]]:
        """Return the month's days as weeks, Monday first; days of the neighbouring months are None."""
        grid = calendar.Calendar(firstweekday=calendar.MONDAY).monthdatescalendar(self.year, self.month)
        return [[day if day.month == self.month else None for day in week] for week in grid]


def today(now: datetime, zone: ZoneInfo) -> date:
    """Return today's date where the coordinator is (the organisation's zone), not in UTC."""
    return now.astimezone(zone).date()


def selectable(day: date, first: date) -> bool:
    """Whether a day may be pressed: not before today."""
    return day >= first


def can_go_back(month: Month, first: date) -> bool:
    """Whether the previous month still has a day that may be chosen."""
    return month.shift(-1).code >= Month.of(first).code


def day_from_code(code: int) -> date | None:
    """Return the date of a yyyymmdd code, None if it names none (Feb 30, a forged button)."""
    year, rest = divmod(code, 10000)
    month, day = divmod(rest, 100)
    try:
        return date(year, month, day)
    except ValueError:
        return None


def day_code(day: date) -> int:
    """Return a date as yyyymmdd, as a button carries it."""
    return day.year * 10000 + day.month * 100 + day.day


def written(day: date, hour: int, minute: int) -> str:
    """Return the chosen moment as a coordinator would type it, for the same parser to read."""
    return datetime.combine(day, time(hour, minute)).strftime(TIME_FORMAT)
