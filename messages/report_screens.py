"""Screens of the guided report and the SOS: text and inline keyboard for each step."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.domain import dates
from bot.domain.callbacks import ReportAction, ReportPress, SosPress
from bot.domain.report_form import (
    CATEGORIES,
    EDITABLE,
    REGIONS,
    WHEN_CHOICES,
    Draft,
    FormError,
    has_value,
    telegram_length,
)
from messages.catalog import Catalogs, Safe

TELEGRAM_TEXT_LIMIT = 4096
_REVIEW_PREVIEWS = (2500, 1800, 1200, 600, 200)
_REVIEW_LIMIT = TELEGRAM_TEXT_LIMIT - 96  # room for Telegram's own counting of entities


def report_data(draft: Draft, action: ReportAction, arg: str = "") -> str:
    """Return callback data for a button of the draft's current step."""
    return ReportPress(draft.nonce, draft.step, action, arg).pack()


def sos_data(draft: Draft, action: Literal["go", "cancel", "done"]) -> str:
    """Return callback data for an SOS button."""
    return SosPress(draft.nonce, action).pack()


def render_step(
    texts: Catalogs,
    lang: str,
    draft: Draft,
    zone: ZoneInfo,
    error: FormError | None = None,
    header: str = "",
) -> tuple[str, InlineKeyboardMarkup]:
    """Return the prompt of the draft's step, with the last input's problem above it; the review starts
    with `header` (the person's safety word: messages.identity_screens.safeword_header)."""
    prefix = texts.text(lang, error.key, **error.params) + "\n\n" if error is not None else ""
    if draft.step == "review":
        prefix = header + prefix
        # The whole review must fit in one message: shorten the preview of the text until it does.
        for preview in _REVIEW_PREVIEWS:
            text, keyboard = _review(texts, lang, draft, zone, preview)
            if telegram_length(prefix + text) <= _REVIEW_LIMIT:
                break
        return prefix + text, keyboard
    text = texts.text(lang, f"report.step.{draft.step}", count=len(draft.evidence))
    if draft.step == "when_typed":
        text += "\n" + texts.text(lang, "report.timezone_note", zone=str(zone))
    return prefix + text, _step_keyboard(texts, lang, draft)


def render_resume(texts: Catalogs, lang: str, draft: Draft) -> tuple[str, InlineKeyboardMarkup]:
    """Offer to continue an unfinished report or start over."""
    keyboard = InlineKeyboardMarkup(
        [
            [
                _button(texts, lang, "button.continue", report_data(draft, "resume")),
                _button(texts, lang, "button.restart", report_data(draft, "restart")),
            ]
        ]
    )
    return texts.text(lang, "report.resume"), keyboard


def render_receipt(texts: Catalogs, lang: str, code: str, contactable: bool, keep_hours: float) -> str:
    """The receipt: the reporter's own code (never the coordinators'), and when it leaves the phone."""
    key = "report.receipt_contactable" if contactable else "report.receipt"
    return (
        texts.text(lang, key, code=code)
        + "\n"
        + texts.text(lang, "report.receipt_vanishes", hours=f"{keep_hours:g}")
    )


def render_sos_confirm(
    texts: Catalogs, lang: str, draft: Draft, header: str = ""
) -> tuple[str, InlineKeyboardMarkup]:
    """The second tap of the SOS, the person's safety word (`header`) on top."""
    keyboard = InlineKeyboardMarkup(
        [
            [_button(texts, lang, "sos.send", sos_data(draft, "go"))],
            [_button(texts, lang, "button.cancel", sos_data(draft, "cancel"))],
        ]
    )
    return header + texts.text(lang, "sos.confirm"), keyboard


def render_sos_followup(
    texts: Catalogs, lang: str, draft: Draft, key: str, error: FormError | None = None, **params: object
) -> tuple[str, InlineKeyboardMarkup]:
    """After the SOS: what to send next, and a Done button that clears the conversation."""
    keyboard = InlineKeyboardMarkup([[_button(texts, lang, "button.done", sos_data(draft, "done"))]])
    text = texts.text(lang, key, **params)
    if error is not None:
        text = texts.text(lang, error.key, **error.params) + "\n\n" + text
    return text, keyboard


def _step_keyboard(texts: Catalogs, lang: str, draft: Draft) -> InlineKeyboardMarkup:
    rows: list[list[InlineKeyboardButton]] = []
    step = draft.step
    if step == "category":
        rows += _pairs(
            [_button(texts, lang, f"category.{c}", report_data(draft, "cat", c)) for c in CATEGORIES]
        )
    elif step == "when":
        rows += _pairs(
            [_button(texts, lang, f"when.{w}", report_data(draft, "when", w)) for w in WHEN_CHOICES]
        )
    elif step == "where":
        rows += _pairs(
            [_button(texts, lang, f"region.{r}", report_data(draft, "region", r)) for r in REGIONS]
        )
    if has_value(draft):
        rows.append([_button(texts, lang, "button.keep", report_data(draft, "keep"))])
    if step in ("location", "people"):
        rows.append([_button(texts, lang, "button.skip", report_data(draft, "skip"))])
    if step == "evidence":
        rows.append([_button(texts, lang, "button.done", report_data(draft, "done"))])
    elif step == "contact":
        rows.append([_button(texts, lang, "contact.no", report_data(draft, "contact", "no"))])
        rows.append([_button(texts, lang, "contact.yes", report_data(draft, "contact", "yes"))])
    navigation = [_button(texts, lang, "button.cancel", report_data(draft, "cancel"))]
    if step != "category":
        navigation.insert(0, _button(texts, lang, "button.back", report_data(draft, "back")))
    rows.append(navigation)
    return InlineKeyboardMarkup(rows)


def _review(
    texts: Catalogs, lang: str, draft: Draft, zone: ZoneInfo, preview: int
) -> tuple[str, InlineKeyboardMarkup]:
    none = texts.text(lang, "report.none")
    where = texts.text(lang, f"region.{draft.region}") if draft.region else none
    if draft.place:
        where = Safe(f"{where} — {_escape(draft.place)}")  # the label is HTML already
    location = (
        texts.text(lang, "report.location_value", latitude=draft.location[0], longitude=draft.location[1])
        if draft.location
        else none
    )
    text = draft.text or none
    if len(text) > preview:
        text = Safe(
            texts.text(lang, "report.text_preview", text=text[:preview], length=len(draft.text or ""))
        )
    body = texts.text(
        lang,
        "report.review",
        category=texts.text(lang, f"category.{draft.category}") if draft.category else none,
        when=_when(draft, zone) or none,
        where=where,
        location=Safe(location),
        text=text,
        people=draft.people or none,
        evidence=len(draft.evidence),
        contact=texts.text(lang, "contact.yes" if draft.contactable else "contact.no")
        if draft.contactable is not None
        else none,
    )
    edits = [_button(texts, lang, f"edit.{field}", report_data(draft, "edit", field)) for field in EDITABLE]
    rows = [edits[i : i + 3] for i in range(0, len(edits), 3)]
    rows.append([_button(texts, lang, "button.submit", report_data(draft, "submit"))])
    rows.append([_button(texts, lang, "button.cancel", report_data(draft, "cancel"))])
    return body, InlineKeyboardMarkup(rows)


def _when(draft: Draft, zone: ZoneInfo) -> str | None:
    if draft.occurred_at is None:
        return None
    return dates.occurred(datetime.fromisoformat(draft.occurred_at), zone, draft.precision)


def _button(texts: Catalogs, lang: str, key: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(texts.plain(lang, key), callback_data=data)


def _pairs(buttons: list[InlineKeyboardButton]) -> list[list[InlineKeyboardButton]]:
    return [buttons[i : i + 2] for i in range(0, len(buttons), 2)]


def _escape(value: str) -> str:
    import html

    return html.escape(value)
