"""Every date and time shown to people comes from bot.domain.dates; these pin each form exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.domain import dates
from bot.services.desk.browse import ReportView
from bot.services.reports.body import ReportBody
from handlers.workspace_screens import report_view
from messages import catalogs
from storage.reports import Report

BISHKEK = ZoneInfo("Asia/Bishkek")  # UTC+6, no daylight saving
AT = datetime(2025, 12, 31, 18, 30, tzinfo=UTC)  # 1 January 2026, 00:30 in Bishkek


def test_each_form_in_the_zone_it_is_shown_in() -> None:
    assert dates.moment(AT, BISHKEK) == "01.01.2026 00:30"
    assert dates.day(AT, BISHKEK) == "01.01.2026"
    assert dates.clock(AT, BISHKEK) == "00:30"
    assert dates.recent(AT, BISHKEK) == "01.01 00:30"
    assert dates.week(date(2025, 12, 29)) == "29.12"


def test_records_and_file_names_are_in_utc_whatever_the_zone() -> None:
    assert dates.utc_moment(AT.astimezone(BISHKEK)) == "2025-12-31 18:30 UTC"
    assert dates.file_stamp(AT.astimezone(BISHKEK)) == "20251231-1830"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2025, 12, 31, 19, 0, tzinfo=UTC), "00:30"),  # the same day in Bishkek
        (datetime(2025, 12, 31, 17, 0, tzinfo=UTC), "01.01 00:30"),  # still the day before in Bishkek
    ],
)
def test_since_drops_the_date_only_on_the_same_local_day(now: datetime, expected: str) -> None:
    assert dates.since(AT, now, BISHKEK) == expected


def test_occurred_is_as_precise_as_the_reporter_was() -> None:
    assert dates.occurred(AT, BISHKEK, "date") == "01.01.2026"
    assert dates.occurred(AT, BISHKEK, "exact") == "01.01.2026 00:30"
    assert dates.occurred(AT, BISHKEK, None) == "01.01.2026 00:30"


def test_the_desk_view_shows_a_date_only_occurrence_as_a_date() -> None:
    # The alert card and the reporter's summary already did; the desk view used to add a midnight.
    midnight = datetime(2026, 1, 1, tzinfo=BISHKEK).astimezone(UTC)
    report = Report(
        id=1, code="R-7K3QX", kind="report", category="detention", occurred_at=midnight,
        occurred_precision="date", region=None, body=b"", contactable=False, reporter=None,
        contact_chat=None, status="new", created_at=AT,
    )  # fmt: skip
    view = ReportView(
        report=report,
        body=ReportBody(text=None, place=None, location=None, people=None),
        assignee=None,
        acknowledged_by=None,
        evidence=[],
        notes=[],
        events=[],
    )
    first = report_view(catalogs(), "en", view, BISHKEK)[0]
    assert "<b>When:</b> 01.01.2026\n" in first
    assert "<b>Received:</b> 01.01.2026 00:30\n" in first
