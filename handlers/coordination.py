"""Coordinators' side of alerts: /bind the alerts chat, the triage buttons on each card, /duplicate."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, filters

from bot.context import JarchyContext
from bot.services.roles import NotAllowed
from handlers.workspace import WorkspaceError, in_workspace, refusal

_GROUPS = filters.ChatType.GROUPS & filters.UpdateType.MESSAGE


async def bind_alert_chat(update: Update, context: JarchyContext) -> None:
    """Make this group the coordinators' chat (admins only); held alerts go out now."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    try:
        released = await context.services.alerts.bind(user.id, chat.id)
    except NotAllowed:
        await context.services.gate.refuse(user.id, "alerts.bind", detail="role")
        await message.reply_text(context.text("bind.refused"), parse_mode=ParseMode.HTML)
        return
    await message.reply_text(context.text("bind.done", released=released), parse_mode=ParseMode.HTML)


async def press_triage_button(update: Update, context: JarchyContext) -> None:
    """Apply Acknowledge, Take, Verify, Close, Spam or Reopen; the card is edited to match."""
    query, user = update.callback_query, update.effective_user
    if query is None or query.data is None or user is None:
        return
    parts = query.data.split(":")
    if len(parts) != 3:
        await query.answer(context.plain("callback.stale"))
        return
    _, code, action = parts
    try:
        answer = await context.services.triage.press(user.id, code, action)
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)
        return
    await query.answer(context.plain(answer.key, **answer.params), show_alert=not answer.changed)


async def mark_duplicate(update: Update, context: JarchyContext) -> None:
    """/duplicate R-AAAAA R-BBBBB: reject the first report as a duplicate of the second."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "triage.duplicate"):
        return
    args = context.args or []
    if len(args) != 2:
        await message.reply_text(context.text("triage.duplicate_usage"), parse_mode=ParseMode.HTML)
        return
    try:
        answer = await context.services.triage.mark_duplicate(user.id, args[0], args[1])
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error), parse_mode=ParseMode.HTML)
        return
    await message.reply_text(context.text(answer.key, **answer.params), parse_mode=ParseMode.HTML)


def register(app: Application) -> None:
    """Handle /bind in groups, /duplicate and the triage buttons."""
    app.add_handler(CommandHandler("bind", bind_alert_chat, filters=_GROUPS))
    app.add_handler(CommandHandler("duplicate", mark_duplicate))
    app.add_handler(CallbackQueryHandler(press_triage_button, pattern=r"^t:"))
