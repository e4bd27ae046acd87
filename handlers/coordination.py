"""Coordinators' side of reports: /bind the alerts chat, and the triage buttons on each alert."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, filters

from bot.context import JarchyContext
from bot.services.roles import NotAllowed
from storage.reports import ReportNotFound

_GROUPS = filters.ChatType.GROUPS & filters.UpdateType.MESSAGE


async def bind_alert_chat(update: Update, context: JarchyContext) -> None:
    """Make this group the coordinators' chat (admins only); held alerts go out now."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    try:
        released = await context.services.alerts.bind(user.id, chat.id)
    except NotAllowed:
        await message.reply_text(context.text("bind.refused"))
        return
    await message.reply_text(context.text("bind.done", released=released))


async def press_triage_button(update: Update, context: JarchyContext) -> None:
    """Record who pressed Acknowledge, Take or Close; refuse anyone without the role."""
    query, user = update.callback_query, update.effective_user
    if query is None or query.data is None or user is None:
        return
    parts = query.data.split(":")
    if len(parts) != 3:
        await query.answer(context.text("callback.stale"))
        return
    _, code, action = parts
    try:
        result = await context.services.alerts.triage(user.id, code, action)
    except NotAllowed:
        await query.answer(context.text("triage.refused"), show_alert=True)
        return
    except ReportNotFound:
        await query.answer(context.text("callback.stale"), show_alert=True)
        return
    await query.answer(context.text(f"triage.recorded_{result.action}", code=result.code))


def register(app: Application) -> None:
    """Handle /bind in groups and the triage buttons."""
    app.add_handler(CommandHandler("bind", bind_alert_chat, filters=_GROUPS))
    app.add_handler(CallbackQueryHandler(press_triage_button, pattern=r"^t:"))
