"""Coordinators' side of alerts: /bind the alerts chat, the triage buttons on each card, /duplicate, a
digest's buttons, /duty, and what Telegram says about the coordinators' chat (the bot removed, a
migration to a supergroup)."""

from __future__ import annotations

import contextlib

from telegram import ChatMemberRestricted, Message, Update
from telegram.constants import ChatType
from telegram.error import BadRequest
from telegram.ext import (
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import DutyPress, OpenCard, TriagePress
from bot.domain.errors import Refused
from bot.services.access.roles import NotAllowed
from handlers.workspace import WorkspaceError, in_workspace, pressed_in_workspace, refusal
from handlers.workspace_screens import duty_screen

_GROUPS = filters.ChatType.GROUPS & filters.UpdateType.MESSAGE


async def bind_alert_chat(update: Update, context: JarchyContext) -> None:
    """Make this group the coordinators' chat (admins only; a move needs a second admin); held alerts go
    out when it takes effect."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    try:
        binding = await context.services.alerts.bind(user.id, chat.id, chat.title)
    except NotAllowed:
        await message.reply_text(context.text("bind.refused"))
        return
    except Refused as refused:
        await message.reply_text(refusal(context, refused))
        return
    await message.reply_text(context.text(binding.key, **binding.params))


async def press_triage_button(update: Update, context: JarchyContext) -> None:
    """Apply Acknowledge, Take, Verify, Close, Spam or Reopen; every copy of the card is edited to match."""
    query, user = update.callback_query, update.effective_user
    if query is None or query.data is None or user is None:
        return
    press = TriagePress.unpack(query.data)  # routed only when it unpacks
    code, action = press.report, press.action
    pressed = query.message if isinstance(query.message, Message) else None
    if pressed is not None and not _carries(pressed, query.data):
        pressed = None  # forged data: the message is not this report's card, so it is never adopted
    try:
        answer = await context.services.triage.press(
            user.id,
            code,
            action,
            chat_id=pressed.chat.id if pressed is not None else None,
            message_id=pressed.message_id if pressed is not None else None,
        )
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)
        return
    await query.answer(context.plain(answer.key, **answer.params), show_alert=not answer.changed)


async def open_card(update: Update, context: JarchyContext) -> None:
    """A digest's button: send that report's full card to the presser in private."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or query.data is None or user is None or chat is None:
        return
    if not await pressed_in_workspace(update, context, "alerts.open"):
        return
    press = OpenCard.unpack(query.data)  # routed only when it unpacks
    try:
        code = await context.services.triage.open_card(user.id, press.report)
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)
        return
    await query.answer(context.plain("digest.opened", code=code))


async def mark_duplicate(update: Update, context: JarchyContext) -> None:
    """/duplicate R-AAAAA R-BBBBB: reject the first report as a duplicate of the second."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "triage.duplicate"):
        return
    args = context.args or []
    if len(args) != 2:
        await message.reply_text(context.text("triage.duplicate_usage"))
        return
    try:
        answer = await context.services.triage.mark_duplicate(user.id, args[0], args[1])
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_text(context.text(answer.key, **answer.params))


async def show_duty(update: Update, context: JarchyContext) -> None:
    """/duty: say whether you are on duty, with the button that switches it (`/duty on|off` too)."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    if chat.type != ChatType.PRIVATE:
        # SOS on duty arrive in private: the switch lives there. Only the coordinators' chat hears why;
        # in any other group the bot stays silent (a stranger's group gets nothing to flood with).
        await context.services.gate.refuse(user.id, "team.duty", detail="wrong chat")
        if await context.services.alerts.is_coordinator_chat(chat.id):
            await message.reply_text(context.text("duty.private_only"))
        return
    args = [a.lower() for a in context.args or []]
    try:
        if args and args[0] in ("on", "off"):
            state = await context.services.duty.set(user.id, args[0] == "on")
        else:
            state = await context.services.duty.status(user.id)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    text, keyboard = duty_screen(context.texts, context.language, state.on_duty, state.on_duty_count)
    await message.reply_text(text, reply_markup=keyboard)


async def press_duty_button(update: Update, context: JarchyContext) -> None:
    """The /duty button: go on or off duty."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or query.data is None or user is None or chat is None:
        return
    if not await pressed_in_workspace(update, context, "team.duty", private_only=True):
        return
    press = DutyPress.unpack(query.data)  # routed only when it unpacks
    try:
        state = await context.services.duty.set(user.id, press.to == "on")
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)
        return
    text, keyboard = duty_screen(context.texts, context.language, state.on_duty, state.on_duty_count)
    if isinstance(query.message, Message):
        # A double tap finds the screen already showing this.
        with contextlib.suppress(BadRequest):
            await query.message.edit_text(text, reply_markup=keyboard)
    await query.answer()


async def track_membership(update: Update, context: JarchyContext) -> None:
    """The bot was removed, demoted, restricted or added back somewhere: alerts care about one chat."""
    change = update.my_chat_member
    if change is None:
        return
    member = change.new_chat_member
    if change.chat.type == "private":
        # A person blocked or unblocked the bot in use; a backup in use then no longer (or again)
        # counts as reaching them (BackupService).
        await context.services.backups.private_status(change.chat.id, member.status)
        return
    can_send = not isinstance(member, ChatMemberRestricted) or bool(member.can_send_messages)
    await context.services.watch.membership_changed(change.chat.id, member.status, can_send)


async def follow_migration(update: Update, context: JarchyContext) -> None:
    """The group became a supergroup: alerts follow it to its new id."""
    message = update.effective_message
    if message is None or message.migrate_to_chat_id is None:
        return
    await context.services.watch.migrated(message.chat.id, message.migrate_to_chat_id)


def _carries(message: Message, data: str) -> bool:
    markup = message.reply_markup
    if markup is None:
        return False
    return any(button.callback_data == data for row in markup.inline_keyboard for button in row)


def register(app: JarchyApp) -> None:
    """Handle /bind in groups, /duplicate, /duty, the triage and digest buttons, and the chat's fate."""
    app.add_handler(CommandHandler("bind", bind_alert_chat, filters=_GROUPS))
    app.add_handler(CommandHandler("duplicate", mark_duplicate))
    app.add_handler(CommandHandler("duty", show_duty, filters=filters.UpdateType.MESSAGE))
    app.add_handler(CallbackQueryHandler(press_triage_button, pattern=TriagePress.matches))
    app.add_handler(CallbackQueryHandler(open_card, pattern=OpenCard.matches))
    app.add_handler(CallbackQueryHandler(press_duty_button, pattern=DutyPress.matches))
    app.add_handler(ChatMemberHandler(track_membership, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, follow_migration))
