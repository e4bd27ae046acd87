"""Screens of declared commands: the usage text assembled from the fields' labels, the answer to a field
that could not be read, and each step of a guided flow with its buttons and the date and time picker."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.domain import date_picker, dates
from bot.domain.callbacks import DatePress, FlowPress
from bot.domain.commands import CommandError, CommandSpec, Field, usage_line
from messages.catalog import Catalogs, Safe

_Press = Literal["pick", "skip", "back", "cancel", "save"]
_Pick = Literal["month", "day", "hour", "minute", "type"]
_EMPTY = " "  # a blank grid cell: Telegram refuses a button without text
_PREVIEW = 300  # characters of a long value shown in the summary


class CaseChoice(Protocol):
    """What a case button needs (storage.cases.Case has it)."""

    @property
    def id(self) -> int: ...

    @property
    def title(self) -> str: ...


class HearingChoice(Protocol):
    """What a hearing button needs (storage.cases.Hearing has it)."""

    @property
    def id(self) -> int: ...

    @property
    def case_title(self) -> str: ...

    @property
    def starts_at(self) -> datetime: ...


class FlowState(Protocol):
    """What a flow screen needs (bot.services.cases.flows.Flow has it)."""

    nonce: str
    step: int
    values: dict[str, str | None]
    month: int | None
    day: int | None
    hour: int | None
    typing: bool

    @property
    def spec(self) -> CommandSpec: ...

    @property
    def field(self) -> Field | None: ...


def render_usage(texts: Catalogs, lang: str, spec: CommandSpec) -> str:
    """Return the command's usage: its line assembled from the field labels, then how to write it."""
    line = usage_line(spec, lambda key: texts.plain(lang, key))
    notes = texts.text(lang, "cmd.usage_notes", command=spec.name)
    return texts.text(lang, spec.usage_key, line=line) + "\n" + notes


def render_refusal(texts: Catalogs, lang: str, error: CommandError) -> str:
    """Return what could not be read: the field and why, then the usage (the usage alone for the count)."""
    usage = render_usage(texts, lang, error.spec)
    if error.field is None:
        return usage
    field = texts.plain(lang, error.field.label_key)
    problem = Safe(texts.text(lang, error.key))
    return texts.text(lang, "cmd.field_error", field=field, problem=problem) + "\n\n" + usage


def render_flow(
    texts: Catalogs,
    lang: str,
    flow: FlowState,
    today: date,
    zone: ZoneInfo,
    error: str | None = None,
    cases: tuple[CaseChoice, ...] = (),
    hearings: tuple[HearingChoice, ...] = (),
) -> tuple[str, InlineKeyboardMarkup]:
    """Return the flow's current step: the prompt (or the summary) and its buttons."""
    spec, current = flow.spec, flow.field
    prefix = texts.text(lang, error) + "\n\n" if error is not None else ""
    if current is None:
        return prefix + _summary(texts, lang, flow), _summary_keyboard(texts, lang, flow)
    header = texts.text(
        lang,
        "flow.header",
        command=spec.name,
        step=flow.step + 1,
        count=len(spec.fields),
        field=texts.plain(lang, current.label_key),
    )
    body = [header, texts.text(lang, current.prompt_key)]
    given = flow.values.get(current.name)
    if given:
        body.append(texts.text(lang, "flow.current", value=_preview(given)))
    rows: list[list[InlineKeyboardButton]] = []
    if current.kind == "choice":
        rows += [
            [_button(texts.plain(lang, f"{current.label_key}.{value}"), _press(flow, "pick", value))]
            for value in current.choices
        ]
    elif current.kind == "case":
        rows += [
            [_button(f"#{case.id} {case.title}"[:60], _press(flow, "pick", str(case.id)))] for case in cases
        ]
    elif current.kind == "hearing":
        rows += [
            [
                _button(
                    f"#{hearing.id} {dates.recent(hearing.starts_at, zone)} {hearing.case_title}"[:60],
                    _press(flow, "pick", str(hearing.id)),
                )
            ]
            for hearing in hearings
        ]
    elif current.kind == "datetime":
        picked, picker_rows = _picker(texts, lang, flow, today)
        if picked:
            body.append(picked)
        rows += picker_rows
    nav = [_button(texts.plain(lang, "button.back"), _press(flow, "back"))] if flow.step > 0 else []
    if current.optional:
        nav.append(_button(texts.plain(lang, "button.skip"), _press(flow, "skip")))
    elif given:
        nav.append(_button(texts.plain(lang, "button.keep"), _press(flow, "skip")))
    nav.append(_button(texts.plain(lang, "button.cancel"), _press(flow, "cancel")))
    rows.append(nav)
    return prefix + "\n\n".join(body), InlineKeyboardMarkup(rows)


def month_keyboard(
    texts: Catalogs, lang: str, nonce: str, step: int, month: date_picker.Month, today: date
) -> list[list[InlineKeyboardButton]]:
    """Return a month's grid: the month with previous and next, the weekdays, the days (past ones blank)."""

    def data(action: _Pick, value: int) -> str:
        return DatePress(nonce, step, action, value).pack()

    stay = data("month", month.code)  # blank cells and headers show the same month again
    names = texts.plain(lang, "picker.months").split()
    back = (
        _button("‹", data("month", month.shift(-1).code))
        if date_picker.can_go_back(month, today)
        else _button(_EMPTY, stay)
    )
    title = _button(f"{names[month.month - 1]} {month.year}", stay)
    rows = [[back, title, _button("›", data("month", month.shift(1).code))]]
    rows.append([_button(day, stay) for day in texts.plain(lang, "picker.weekdays").split()])
    for week in month.weeks():
        rows.append(
            [
                _button(str(day.day), data("day", date_picker.day_code(day)))
                if day is not None and date_picker.selectable(day, today)
                else _button(_EMPTY if day is None else "·", stay)
                for day in week
            ]
        )
    return rows


def time_keyboard(nonce: str, step: int, hour: int | None) -> list[list[InlineKeyboardButton]]:
    """Return the hour buttons, or the minute buttons once the hour is chosen."""
    if hour is None:
        hours = [_button(f"{h:02d}", DatePress(nonce, step, "hour", h).pack()) for h in date_picker.HOURS]
        return [hours[i : i + 4] for i in range(0, len(hours), 4)]
    return [
        [
            _button(f"{hour:02d}:{m:02d}", DatePress(nonce, step, "minute", m).pack())
            for m in date_picker.MINUTES
        ]
    ]


def _picker(
    texts: Catalogs, lang: str, flow: FlowState, today: date
) -> tuple[str | None, list[list[InlineKeyboardButton]]]:
    if flow.typing:
        return texts.text(lang, "picker.type_time"), []
    type_it = [
        _button(texts.plain(lang, "button.type_time"), DatePress(flow.nonce, flow.step, "type").pack())
    ]
    day = date_picker.day_from_code(flow.day) if flow.day is not None else None
    if day is None:
        month = date_picker.Month.from_code(flow.month or 0) or date_picker.Month.of(today)
        return None, [*month_keyboard(texts, lang, flow.nonce, flow.step, month, today), type_it]
    shown = f"{day:%d.%m.%Y}"
    other_day = DatePress(flow.nonce, flow.step, "month", date_picker.Month.of(day).code).pack()
    rows = [*time_keyboard(flow.nonce, flow.step, flow.hour), [_button(f"📅 {shown}", other_day)], type_it]
    if flow.hour is None:
        return texts.text(lang, "picker.choose_hour", day=shown), rows
    return texts.text(lang, "picker.choose_minute", day=shown, hour=f"{flow.hour:02d}"), rows


def _summary(texts: Catalogs, lang: str, flow: FlowState) -> str:
    lines = [texts.text(lang, "flow.summary", command=flow.spec.name)]
    for field in flow.spec.fields:
        given = flow.values.get(field.name)
        if given and field.kind == "choice":
            given = texts.plain(lang, f"{field.label_key}.{given.strip().lower()}")
        value = _preview(given) if given else texts.plain(lang, "flow.not_given")
        lines.append(
            texts.text(lang, "flow.summary_line", field=texts.plain(lang, field.label_key), value=value)
        )
    return "\n".join(lines)


def _summary_keyboard(texts: Catalogs, lang: str, flow: FlowState) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [_button(texts.plain(lang, "button.save"), _press(flow, "save"))],
            [
                _button(texts.plain(lang, "button.back"), _press(flow, "back")),
                _button(texts.plain(lang, "button.cancel"), _press(flow, "cancel")),
            ],
        ]
    )


def _press(flow: FlowState, action: _Press, value: str = "-") -> str:
    return FlowPress(flow.nonce, flow.step, action, value).pack()


def _button(label: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=data)


def _preview(value: str) -> str:
    return value if len(value) <= _PREVIEW else value[:_PREVIEW] + "…"
