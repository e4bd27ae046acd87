"""Court cases: /cases, /follow, /unfollow, /following, /settings, /calendar, "I will attend", and the
coordinators' /case_close, /hearing_cancel, /hearings and /bind_channel; the commands with fields (/case_new,
/case_edit, /hearing_add, /hearing_postpone, /hearing_move, /hearing_outcome) are run from here for
handlers.case_commands, which reads them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, Update
from telegram.error import TelegramError
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import AttendPress, BadCallback, CalendarPress, FollowCase, ReminderOffset
from bot.domain.commands import CommandSpec
from bot.domain.errors import Refused
from bot.services.access.roles import NotAllowed
from bot.services.cases.commands import (
    CASE_EDIT,
    CASE_NEW,
    HEARING_ADD,
    HEARING_MOVE,
    HEARING_OUTCOME,
    HEARING_POSTPONE,
)
from bot.services.cases.hearings import OFFSET_CHOICES, CaseNotFound, Hearing, HearingInputError
from handlers.start import PRIVATE_MESSAGES
from handlers.workspace import in_workspace, pressed_in_workspace
from messages.command_screens import render_usage

Action = Callable[[list[str]], Awaitable[str]]
_PAGE_LIMIT = 3500  # characters per message, below Telegram's 4,096 with room for escaping


class Unreadable(Exception):
    """Arguments a coordinators' command could not read; `key` names the usage text."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


async def list_cases(update: Update, context: JarchyContext) -> None:
    """List public cases with a Follow button each."""
    message = update.effective_message
    if message is None:
        return
    cases = await context.services.hearings.public_cases()
    if not cases:
        await message.reply_text(context.text("cases.list_empty"))
        return
    # One message per page that fits Telegram's limit, each with the Follow buttons of its own cases.
    page = [context.text("cases.list_header")]
    buttons: list[list[InlineKeyboardButton]] = []
    for case in cases:
        line = context.text(
            "cases.line", id=case.id, title=case.title, description=case.description, charges=case.charges
        )
        if len("\n\n".join([*page, line])) > _PAGE_LIMIT:
            await message.reply_text("\n\n".join(page), reply_markup=_markup(buttons))
            page, buttons = [], []
        page.append(line)
        label = context.texts.plain(context.language, "button.follow", id=case.id)
        buttons.append([InlineKeyboardButton(label, callback_data=FollowCase(case.id).pack())])
    await message.reply_text("\n\n".join(page), reply_markup=_markup(buttons))


async def follow_case(update: Update, context: JarchyContext) -> None:
    """Follow a case by number or by its button."""
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return
    query = update.callback_query  # a button is routed only when its data unpacks
    case_id = _number(context.args) if query is None else FollowCase.unpack(query.data).case
    if case_id is None:
        await _answer(update, context, context.text("cases.usage_id"))
        return
    try:
        added = await context.services.hearings.follow(user.id, chat.id, case_id)
    except LookupError:
        await _answer(update, context, context.text("cases.not_found"))
        return
    if not added:
        await _answer(update, context, context.text("follow.already"))
        return
    case, _ = await context.services.hearings.case_view(case_id)
    await _answer(update, context, context.text("follow.done", title=case.title))


async def unfollow_case(update: Update, context: JarchyContext) -> None:
    """Stop following a case."""
    user = update.effective_user
    if user is None:
        return
    case_id = _number(context.args)
    if case_id is None:
        await _answer(update, context, context.text("cases.usage_id"))
        return
    removed = await context.services.hearings.unfollow(user.id, case_id)
    await _answer(update, context, context.text("unfollow.done" if removed else "unfollow.not_following"))


async def list_following(update: Update, context: JarchyContext) -> None:
    """List followed cases with their next hearing."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    followed = await context.services.hearings.following(user.id)
    if not followed:
        await message.reply_text(context.text("following.empty"))
        return
    page = [context.text("following.header")]
    for case, upcoming in followed:
        entry = context.text(
            "cases.line", id=case.id, title=case.title, description=case.description, charges=case.charges
        )
        if upcoming:
            entry += "\n" + context.text("cases.next_hearing", **_when_where(context, upcoming[0]))
        if len("\n\n".join([*page, entry])) > _PAGE_LIMIT:
            await message.reply_text("\n\n".join(page))
            page = []
        page.append(entry)
    await message.reply_text("\n\n".join(page))


async def show_settings(update: Update, context: JarchyContext) -> None:
    """Show the reminder offsets as toggles."""
    user = update.effective_user
    if user is None:
        return
    chosen = await context.services.hearings.offsets(user.id)
    await _answer(update, context, context.text("settings.header"), _offset_keyboard(context, chosen))


async def toggle_setting(update: Update, context: JarchyContext) -> None:
    """Turn one reminder offset on or off."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None:
        return
    minutes = ReminderOffset.unpack(query.data).minutes  # routed only when it unpacks
    try:
        chosen = await context.services.hearings.toggle_offset(user.id, minutes or -1)
    except HearingInputError as refused:
        await query.answer(context.text(refused.key), show_alert=True)
        return
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=_offset_keyboard(context, chosen))
    await query.answer()


async def press_attend(update: Update, context: JarchyContext) -> None:
    """Record "I will attend"."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None:
        return
    # Routed by prefix: malformed data is refused here, audited, with the attendance's own answer.
    try:
        press = AttendPress.unpack(query.data)
    except BadCallback:
        await context.services.gate.refuse(user.id, "hearing.attend", detail="callback.stale")
        await query.answer(context.plain("attend.stale"), show_alert=True)
        return
    try:
        await context.services.hearings.attend(user.id, press.hearing, press.sequence)
    except HearingInputError:
        await query.answer(context.plain("attend.stale"), show_alert=True)
        return
    await query.answer(context.plain("attend.done"), show_alert=True)


async def send_calendar(update: Update, context: JarchyContext) -> None:
    """Send an .ics file: one hearing (button or /calendar N) or all followed upcoming hearings."""
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return
    # The file is posted where the button is pressed: only in the presser's own chat, where it was sent.
    pressed = update.callback_query is not None
    if pressed and not await pressed_in_workspace(
        update, context, "hearing.calendar", private_only=True, name_actor=False
    ):
        return
    query = update.callback_query  # a button is routed only when its data unpacks
    hearing_id = CalendarPress.unpack(query.data).hearing if query is not None else _number(context.args)
    try:
        content = await context.services.hearings.calendar(user.id, hearing_id)
    except CaseNotFound:
        await _answer(update, context, context.text("hearings.not_found"))
        return
    if b"BEGIN:VEVENT" not in content:
        await _answer(update, context, context.text("calendar.empty"))
        return
    name = f"hearing-{hearing_id}.ics" if hearing_id else "hearings.ics"
    await chat.send_document(InputFile(content, filename=name), caption=context.text("calendar.caption"))
    if update.callback_query is not None:
        await update.callback_query.answer()


# ---------------------------------------------------------------------- coordinators


async def bind_channel(update: Update, context: JarchyContext) -> None:
    """/bind_channel in a group, or /bind_channel @channel (or its id) in private: announcements go there."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    try:
        # Refused before Telegram is asked: whether it could reach the chat would tell a stranger whether
        # the bot is in it. The service checks the role again when it registers the chat.
        where = str(chat.id) if chat.type != "private" else None
        await context.services.gate.require(user.id, "channel.bind", where, ("admin",))
    except NotAllowed:
        await message.reply_text(context.text("channel.refused"))
        return
    target: int | str = chat.id
    if chat.type == "private":
        if not context.args:
            await message.reply_text(context.text("channel.usage"))
            return
        name = context.args[0]
        target = int(name) if name.lstrip("-").isdigit() else name
    try:
        # The bot must be able to post there: ask Telegram, which also turns @name into the id.
        member = await context.bot.get_chat_member(target, context.bot.id)
        target_chat = await context.bot.get_chat(target)
    except TelegramError:
        await message.reply_text(context.text("channel.unreachable"))
        return
    if member.status not in ("administrator", "creator", "member"):
        await message.reply_text(context.text("channel.unreachable"))
        return
    try:
        added = await context.services.hearings.register_channel(user.id, target_chat.id)
    except NotAllowed:  # the role was lost meanwhile; the gate audited the refusal
        await message.reply_text(context.text("channel.refused"))
        return
    await message.reply_text(context.text("channel.done" if added else "channel.already"))


async def close_case(update: Update, context: JarchyContext) -> None:
    """/case_close N"""

    async def act(parts: list[str]) -> str:
        case_id = _number(parts[:1])
        if case_id is None:
            raise Unreadable("cases.usage_id")
        await context.services.hearings.close_case(_user_id(update), case_id)
        return context.text("cases.closed", id=case_id)

    await _coordinate(update, context, "case.close", act)


async def cancel_hearing(update: Update, context: JarchyContext) -> None:
    """/hearing_cancel N"""

    async def act(parts: list[str]) -> str:
        hearing_id = _number(parts[:1])
        if hearing_id is None:
            raise Unreadable("hearings.usage_id")
        hearing = await context.services.hearings.cancel(_user_id(update), hearing_id)
        return context.text("hearings.changed", id=hearing.id)

    await _coordinate(update, context, "hearing.change", act)


async def list_hearings(update: Update, context: JarchyContext) -> None:
    """/hearings N: every hearing of a case with how many will attend (coordinators)."""

    async def act(parts: list[str]) -> str:
        case_id = _number(parts[:1])
        if case_id is None:
            raise Unreadable("cases.usage_id")
        case, rows = await context.services.hearings.coordinator_view(_user_id(update), case_id)
        lines = [context.text("hearings.case_header", id=case.id, title=case.title)]
        for hearing, count in rows:
            place = _when_where(context, hearing)
            status = context.text(f"hearing_status.{hearing.status}")
            lines.append(
                context.text(
                    "hearings.coordinator_line",
                    id=hearing.id,
                    date=place["date"],
                    court=hearing.court,
                    status=status,
                    count=count,
                )
            )
        if not rows:
            lines.append(context.text("hearings.none"))
        return "\n".join(lines)

    await _coordinate(update, context, "hearing.list", act)


async def execute_command(
    context: JarchyContext, user_id: int, spec: CommandSpec, values: dict[str, object]
) -> str:
    """Run a declared command (bot.services.cases.commands) with its parsed values and return the reply;
    the one-liner and the guided flow's Save both come here. Raises NotAllowed or Refused."""
    hearings = context.services.hearings
    value = values.get
    if spec is CASE_NEW:
        case_id = await hearings.create_case(
            user_id,
            _str(value("names")),
            _str(value("description")),
            _str(value("charges")),
            value("visibility") == "public",
        )
        return context.text("cases.created", id=case_id)
    if spec is CASE_EDIT:
        case_id = _int(value("case"))
        await hearings.edit_case(
            user_id,
            case_id,
            _str(value("names")),
            _str(value("description")),
            _str(value("charges")),
            value("visibility") == "public",
        )
        return context.text("cases.edited", id=case_id)
    if spec is HEARING_ADD:
        hearing = await hearings.add_hearing(
            user_id,
            _int(value("case")),
            _str(value("when")),
            _str(value("court")),
            _str(value("address")),
            _optional(value("details")),
            _optional(value("note")),
        )
        return context.text("hearings.added", id=hearing.id, date=_when_where(context, hearing)["date"])
    hearing_id = _int(value("hearing"))
    if spec is HEARING_POSTPONE:
        hearing = await hearings.postpone(user_id, hearing_id, _str(value("when")))
    elif spec is HEARING_MOVE:
        hearing = await hearings.move(user_id, hearing_id, _str(value("court")), _str(value("address")))
    elif spec is HEARING_OUTCOME:
        hearing = await hearings.record_outcome(user_id, hearing_id, _str(value("outcome")))
    else:
        raise LookupError(spec.name)
    return context.text("hearings.changed", id=hearing.id)  # fmt: skip


def refusal_text(context: JarchyContext, spec: CommandSpec, refused: Refused) -> str:
    """Return the answer to a declared command the service refused; its usage is assembled, not stored."""
    if refused.key == spec.usage_key:
        return render_usage(context.texts, context.language, spec)
    return context.text(refused.key, **refused.params)


# ---------------------------------------------------------------------- glue


async def _coordinate(update: Update, context: JarchyContext, action: str, act: Action) -> None:
    """Run a coordinators' command; every refusal is audited once, by the gate, under `action`."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    if not await in_workspace(update, context, action):
        return
    parts = [part.strip() for part in " ".join(context.args or []).split("|")] if context.args else []
    try:
        try:
            reply = await act(parts)
        except Unreadable as unreadable:
            # Arguments that never reached the service are refused through it all the same: the role
            # first, so a stranger learns no syntax, and audited like the service's own refusals.
            await context.services.hearings.refuse(user.id, action, unreadable.key)
            raise
    except NotAllowed:
        reply = context.text("cases.refused")
    except Refused as refused:
        reply = context.text(refused.key, **refused.params)
    await message.reply_text(reply)


async def _answer(
    update: Update, context: JarchyContext, text: str, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    # Callback alerts hold 200 characters of plain text: the answer goes in a message of its own.
    chat = update.effective_chat
    if chat is not None:
        await chat.send_message(text, reply_markup=keyboard)
    if update.callback_query is not None:
        await update.callback_query.answer()


def _markup(buttons: list[list[InlineKeyboardButton]]) -> InlineKeyboardMarkup | None:
    return InlineKeyboardMarkup(buttons) if buttons else None


def _offset_keyboard(context: JarchyContext, chosen: tuple[int, ...]) -> InlineKeyboardMarkup:
    rows = []
    for minutes in OFFSET_CHOICES:
        mark = "✅ " if minutes in chosen else "▫️ "
        label = mark + context.texts.plain(context.language, f"settings.option.{minutes}")
        rows.append([InlineKeyboardButton(label, callback_data=ReminderOffset(minutes).pack())])
    return InlineKeyboardMarkup(rows)


def _when_where(context: JarchyContext, hearing: Hearing) -> dict[str, object]:
    zone = context.bot_data.settings.timezone
    local = hearing.starts_at.astimezone(zone)
    return {"date": f"{local:%d.%m.%Y %H:%M} ({zone})", "court": hearing.court}


def _number(parts: list[str] | None) -> int | None:
    if not parts:
        return None
    value = parts[0].strip().lstrip("#")
    return int(value) if value.isdigit() and len(value) < 10 else None


def _str(value: object) -> str:
    return str(value)


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected a number, got {value!r}")
    return value


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _user_id(update: Update) -> int:
    user = update.effective_user
    if user is None:
        raise NotAllowed("no user")
    return user.id


def register(app: JarchyApp) -> None:
    """Handle case commands and buttons."""
    for name, callback in (
        ("cases", list_cases),
        ("follow", follow_case),
        ("unfollow", unfollow_case),
        ("following", list_following),
        ("calendar", send_calendar),
    ):
        app.add_handler(CommandHandler(name, callback, filters=PRIVATE_MESSAGES))
    # /case_new, /case_edit and the hearing commands with fields are declared: handlers.case_commands.
    for name, callback in (
        ("case_close", close_case),
        ("hearing_cancel", cancel_hearing),
        ("hearings", list_hearings),
    ):
        app.add_handler(CommandHandler(name, callback))
    app.add_handler(CommandHandler("bind_channel", bind_channel))
    app.add_handler(CallbackQueryHandler(follow_case, pattern=FollowCase.matches))
    app.add_handler(CallbackQueryHandler(toggle_setting, pattern=ReminderOffset.matches))
    app.add_handler(CallbackQueryHandler(press_attend, pattern=AttendPress.claims))
    app.add_handler(CallbackQueryHandler(send_calendar, pattern=CalendarPress.matches))
