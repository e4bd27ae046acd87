"""Report screens stay within Telegram's limits in every language, whatever was typed."""

from __future__ import annotations

import gettext
import io
from zoneinfo import ZoneInfo

import pytest

from bot.domain.report_form import MAX_PEOPLE, MAX_PLACE, MAX_TEXT, Draft, FormError, telegram_length
from messages import LANGUAGES, catalogs
from messages.catalog import LOCALE_DIR, Catalogs, compile_po
from messages.report_screens import render_step

ZONE = ZoneInfo("Asia/Bishkek")
EN_PO = LOCALE_DIR / "en" / "LC_MESSAGES" / "messages.po"


def _full_draft() -> Draft:
    return Draft(
        nonce="0123456789abcdef",
        step="review",
        category="journalist",
        occurred_at="2026-11-20T08:30:00+00:00",
        precision="exact",
        region="elsewhere",
        place="🏛" * (MAX_PLACE // 2),
        location=[42.87, 74.61],
        text="🚓" * (MAX_TEXT // 2),
        people="👤" * (MAX_PEOPLE // 2),
        evidence=[{"uid": "x", "kind": "photo", "sha256": "0" * 64, "size": 1, "unique": "u"}] * 10,
        contactable=True,
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_longest_review_fits_one_message(language: str) -> None:
    draft = _full_draft()
    error = FormError("report.too_long", limit=MAX_TEXT, length=MAX_TEXT + 1)
    text, keyboard = render_step(catalogs(), language, draft, ZONE, error)
    assert telegram_length(text) <= 4096
    for row in keyboard.inline_keyboard:
        for button in row:
            assert button.callback_data is not None
            assert len(str(button.callback_data).encode()) <= 64


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    "step",
    ["category", "when", "when_typed", "where", "place", "location", "text", "people", "evidence", "contact"],
)
def test_every_step_renders_with_valid_buttons(language: str, step: str) -> None:
    draft = Draft(nonce="0123456789abcdef", step=step, text="x", people="y", place="z", location=[1.0, 2.0])
    text, keyboard = render_step(catalogs(), language, draft, ZONE)
    assert text
    data = [str(b.callback_data) for row in keyboard.inline_keyboard for b in row]
    assert all(len(d.encode()) <= 64 for d in data)
    assert any(d.endswith(":cancel:") for d in data)


class _Relabelled(gettext.NullTranslations):
    """English, with one text replaced."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__()
        self.add_fallback(gettext.GNUTranslations(io.BytesIO(compile_po(EN_PO))))
        self._key, self._text = key, text

    def gettext(self, message: str) -> str:
        return self._text if message == self._key else super().gettext(message)


def test_a_region_label_is_html_already_and_only_the_typed_place_is_escaped() -> None:
    # A label with an entity of its own (as a translator may write one) must not be escaped twice.
    texts = Catalogs({"en": _Relabelled("region.elsewhere", "Chüy &amp; Talas")})
    draft = Draft(nonce="0123456789abcdef", step="review", region="elsewhere", place="<b>Café</b> & co")
    text, _ = render_step(texts, "en", draft, ZONE)
    assert "Chüy &amp; Talas — &lt;b&gt;Café&lt;/b&gt; &amp; co" in text
