"""Declared commands (bot.domain.commands) and the date picker's grid (bot.domain.date_picker), alone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.domain import date_picker
from bot.domain.commands import CommandError, CommandSpec, Field, arguments, parse_command, split_fields
from bot.services.cases.commands import CASE_NEW, COMMANDS, HEARING_ADD, HEARING_OUTCOME, HEARING_POSTPONE
from messages import LANGUAGES, catalogs
from messages.command_screens import month_keyboard, render_usage

BISHKEK = ZoneInfo("Asia/Bishkek")


def test_arguments_keep_line_breaks_and_drop_the_command() -> None:
    assert arguments("/case_new@jarchy_bot A |\nline one\nline two") == " A |\nline one\nline two"
    assert arguments("/hearing_add") == ""
    assert arguments(None) == ""


def test_line_breaks_inside_a_field_are_kept() -> None:
    values = parse_command(CASE_NEW, "A. B. | First line\nsecond line\n\nthird | Art. 1 | public")
    assert values["description"] == "First line\nsecond line\n\nthird"
    assert values["visibility"] == "public"


def test_an_escaped_bar_is_a_literal_bar() -> None:
    assert split_fields(r"a \| b | c") == ["a | b", "c"]
    values = parse_command(CASE_NEW, r"A | Case 1\|2 | Art. 3 \| 4 | PRIVATE")
    assert values["description"] == "Case 1|2"
    assert values["charges"] == "Art. 3 | 4"
    assert values["visibility"] == "private"


def test_optional_trailing_fields_may_be_left_off() -> None:
    values = parse_command(HEARING_ADD, "#3 | 01.12.2031 10:00 | Court | Address")
    assert values == {
        "case": 3,
        "when": "01.12.2031 10:00",
        "court": "Court",
        "address": "Address",
        "details": None,
        "note": None,
    }
    full = parse_command(HEARING_ADD, "3 | 01.12.2031 10:00 | Court | Address | Room 5 | Bring\npassports")
    assert full["details"] == "Room 5" and full["note"] == "Bring\npassports"


@pytest.mark.parametrize(
    "raw",
    ["", "3 | 01.12.2031 10:00 | Court", "3 | 01.12.2031 10:00 | Court | Address | Room | Note | extra"],
)
def test_too_few_or_too_many_fields_name_the_usage(raw: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(HEARING_ADD, raw)
    assert caught.value.field is None and caught.value.key == "hearings.usage_add"


def test_a_bad_date_names_its_field_and_keeps_what_was_read() -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(HEARING_ADD, "7 | 31.02.2031 10:00 | Court | Address")
    error = caught.value
    assert error.field is not None and error.field.name == "when"
    assert error.key == "hearings.bad_time"
    assert error.parsed == {"case": 7}


def test_a_bad_number_and_a_bad_choice_are_refused() -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(HEARING_POSTPONE, "twelve | 01.12.2031 10:00")
    assert caught.value.key == "cmd.bad_number"
    with pytest.raises(CommandError) as caught:
        parse_command(CASE_NEW, "A | B | C | secret")
    assert caught.value.field is not None and caught.value.field.name == "visibility"


def test_the_outcome_takes_the_rest_of_the_line_bars_included() -> None:
    values = parse_command(HEARING_OUTCOME, "12 | Adjourned | next week\nDetention extended")
    assert values["outcome"] == "Adjourned | next week\nDetention extended"


def test_a_declaration_keeps_optional_and_rest_fields_last() -> None:
    required = Field("a", str, "p", "l")
    optional = Field("b", str, "p", "l", optional=True)
    with pytest.raises(TypeError):
        CommandSpec("x", (optional, required), "u", "a")
    with pytest.raises(TypeError):
        CommandSpec("x", (Field("r", str, "p", "l", rest=True), required), "u", "a")


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_usage_is_assembled_from_the_field_labels(language: str) -> None:
    texts = catalogs()
    usage = render_usage(texts, language, HEARING_ADD)
    for field in HEARING_ADD.fields:
        label = texts.text(language, field.label_key)
        assert (f"[{label}]" if field.optional else label) in usage
    assert "/hearing_add " in usage and "\\|" in usage
    for spec in COMMANDS.values():
        assert f"/{spec.name} " in render_usage(texts, language, spec)


# ---------------------------------------------------------------------- the picker


def test_a_month_grid_starts_on_monday_and_blanks_other_months() -> None:
    weeks = date_picker.Month(2026, 6).weeks()  # 1 June 2026 is a Monday
    assert weeks[0][0] == date(2026, 6, 1)
    assert all(len(week) == 7 for week in weeks)
    days = [day for week in weeks for day in week if day is not None]
    assert days[0] == date(2026, 6, 1) and days[-1] == date(2026, 6, 30) and len(days) == 30
    march = date_picker.Month(2026, 3).weeks()  # 1 March 2026 is a Sunday
    assert march[0][:6] == [None] * 6 and march[0][6] == date(2026, 3, 1)


def test_the_leap_day_is_in_february_of_a_leap_year_only() -> None:
    leap = [d for w in date_picker.Month(2028, 2).weeks() for d in w if d is not None]
    plain = [d for w in date_picker.Month(2027, 2).weeks() for d in w if d is not None]
    assert leap[-1] == date(2028, 2, 29) and plain[-1] == date(2027, 2, 28)
    assert date_picker.day_from_code(20280229) == date(2028, 2, 29)
    assert date_picker.day_from_code(20270229) is None  # a forged button for a day that does not exist


def test_months_shift_across_the_year() -> None:
    assert date_picker.Month(2026, 12).shift(1) == date_picker.Month(2027, 1)
    assert date_picker.Month(2027, 1).shift(-1) == date_picker.Month(2026, 12)
    assert date_picker.Month.from_code(202613) is None
    assert date_picker.Month.from_code(202701) == date_picker.Month(2027, 1)


def test_today_is_the_coordinators_date_not_utcs() -> None:
    # 20:30 UTC on 31 December is already 1 January in Bishkek (UTC+6).
    late = datetime(2026, 12, 31, 20, 30, tzinfo=UTC)
    assert date_picker.today(late, BISHKEK) == date(2027, 1, 1)
    assert date_picker.today(late, ZoneInfo("America/New_York")) == date(2026, 12, 31)


def test_past_days_cannot_be_pressed_and_the_month_before_is_closed() -> None:
    first = date(2026, 6, 17)
    rows = month_keyboard(catalogs(), "ru", "0" * 16, 1, date_picker.Month(2026, 6), first)
    header, weekdays, *weeks = rows
    assert [b.text for b in weekdays] == ["Пн", "Вт", "Ср", "Чт", "Пт", "Сб", "Вс"]
    assert "Июнь 2026" in header[1].text
    assert header[0].callback_data == "dp:" + "0" * 16 + ":1:month:202606"  # no way back to May
    assert str(header[2].callback_data).endswith(":month:202607")
    pressable = [b.text for week in weeks for b in week if ":day:" in str(b.callback_data)]
    assert pressable == [str(d) for d in range(17, 31)]
    july = month_keyboard(catalogs(), "en", "0" * 16, 1, date_picker.Month(2026, 7), first)
    assert str(july[0][0].callback_data).endswith(":month:202606")  # back to the current month


def test_the_chosen_moment_is_written_as_a_typed_time() -> None:
    written = date_picker.written(date(2028, 2, 29), 9, 45)
    assert written == "29.02.2028 09:45"
    assert parse_command(HEARING_POSTPONE, f"1 | {written}")["when"] == written
