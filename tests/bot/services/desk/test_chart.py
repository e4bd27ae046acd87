"""The weekly /stats chart: a PNG of the right size for empty and Cyrillic/Uzbek data, byte-stable."""

from __future__ import annotations

import struct
import warnings
from dataclasses import replace
from datetime import date, timedelta

import pytest

from bot.services.desk.chart import WeeklyPicture, render_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WEEKS = [date(2025, 12, 8) + timedelta(weeks=n) for n in range(12)]  # crosses a year boundary

RU_CATEGORIES = (
    "Задержание",
    "Вызов или допрос",
    "Обыск или рейд",
    "Насилие силовиков",
    "Угрозы или запугивание",
    "Слежка",
    "Нападение на журналиста/СМИ",
    "Судебное преследование",
    "Травля в интернете",
    "Другое",
    "SOS (экстренно)",
)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG format requires to come first."""
    assert png[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR"
    assert length == 13
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def picture(by_category: dict[str, list[int]], **overrides: object) -> WeeklyPicture:
    """A Russian picture over WEEKS with open/closed derived from the category totals."""
    totals = [sum(week) for week in zip(*by_category.values(), strict=True)] or [0] * len(WEEKS)
    base = WeeklyPicture(
        title="Картина недели",
        weeks=WEEKS,
        by_category=by_category,
        opened=[total // 2 for total in totals],
        closed=[total - total // 2 for total in totals],
        reports_axis="Сообщения",
        open_label="Открыты",
        closed_label="Закрыты или отклонены",
        by_category_title="По категориям",
        open_closed_title="Открытые и закрытые",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def busy_picture() -> WeeklyPicture:
    """Every category has reports, so the palette wraps and hatches appear."""
    return picture(
        {
            label: [(week * 7 + n * 3) % 5 for week in range(len(WEEKS))]
            for n, label in enumerate(RU_CATEGORIES)
        }
    )


def test_png_of_the_expected_size() -> None:
    png = render_png(busy_picture())
    assert png.startswith(PNG_SIGNATURE)
    assert png_size(png) == (1000, 800)


def test_no_software_version_in_the_png() -> None:
    assert b"matplotlib" not in render_png(busy_picture()).lower()


def test_all_zero_renders() -> None:
    empty = picture({label: [0] * len(WEEKS) for label in RU_CATEGORIES})
    assert png_size(render_png(empty)) == (1000, 800)


def test_no_categories_at_all_renders() -> None:
    assert png_size(render_png(picture({}))) == (1000, 800)


def test_single_week_renders() -> None:
    one = picture({"Задержание": [3]}, weeks=[WEEKS[0]], opened=[1], closed=[2])
    assert png_size(render_png(one)) == (1000, 800)


@pytest.mark.parametrize(
    ("labels", "text"),
    [
        (RU_CATEGORIES, {}),
        (
            ("Chaqiruv yoki soʻroq", "Militsiya zoʻravonligi", "Sud orqali ta’qib", "SOS (shoshilinch)"),
            {"title": "Haftaning manzarasi — Oʻzbekcha", "reports_axis": "Xabarlar"},
        ),
        (
            ("Кармоо", "Тинтүү же рейд", "Аңдуу", "Коркутуу же опузалоо", "Журналистке/ЖМКга кол салуу"),
            {"title": "Жуманын сүрөтү", "open_label": "Ачык", "closed_label": "Жабык"},
        ),
    ],
    ids=["ru", "uz", "ky"],
)
def test_non_latin_text_renders_without_warnings(labels: tuple[str, ...], text: dict[str, str]) -> None:
    by_category = {label: [(week + n) % 4 for week in range(len(WEEKS))] for n, label in enumerate(labels)}
    with warnings.catch_warnings():
        # A missing glyph is only a UserWarning at draw time; make it fail the test.
        warnings.simplefilter("error")
        png = render_png(picture(by_category, **text))
    assert png_size(png) == (1000, 800)


@pytest.mark.parametrize("field", ["opened", "closed", "by_category"])
def test_series_of_the_wrong_length_is_rejected(field: str) -> None:
    short = [1] * (len(WEEKS) - 1)
    good = picture({"Задержание": [1] * len(WEEKS)})
    if field == "by_category":
        bad = replace(good, by_category={"Задержание": short})
    elif field == "opened":
        bad = replace(good, opened=short)
    else:
        bad = replace(good, closed=short)
    with pytest.raises(ValueError, match=r"11 values, expected one per week \(12\)"):
        render_png(bad)


def test_negative_count_is_rejected() -> None:
    bad = picture({"Задержание": [1] * len(WEEKS)}, closed=[-1] + [0] * (len(WEEKS) - 1))
    with pytest.raises(ValueError, match="negative"):
        render_png(bad)


def test_same_input_same_bytes() -> None:
    assert render_png(busy_picture()) == render_png(busy_picture())


def test_a_year_of_weeks_renders() -> None:
    weeks = [date(2025, 3, 3) + timedelta(weeks=n) for n in range(52)]
    year = picture(
        {"Задержание": [n % 3 for n in range(52)]},
        weeks=weeks,
        opened=[n % 2 for n in range(52)],
        closed=[1] * 52,
    )
    assert png_size(render_png(year)) == (1000, 800)


def test_global_rc_params_untouched() -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    render_png(busy_picture())
    assert dict(matplotlib.rcParams) == before
