"""/start and /help: what the bot is for, what it does about safety, and the commands."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CommandHandler, filters

from bot.context import JarchyApp, JarchyContext
from messages.menus import command_list, start_menu

PRIVATE_MESSAGES = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE


async def show_welcome(update: Update, context: JarchyContext) -> None:
    """Greet the person in their language, with one-tap Report and SOS buttons."""
    if update.effective_message is None:
        return
    commands = command_list(context.texts, context.language)
    text = context.text("start.welcome", commands=commands)
    profile = context.profile
    if profile is not None and "admin" in profile.roles:
        if not await context.services.alerts.has_destination():
            text += "\n\n" + context.text("start.no_alert_chat")
        held = await context.services.watch.held()
        if held.reason is not None:
            reason = context.text(f"alerts.reason_{held.reason}")
            text += "\n\n" + context.text("start.held_alerts", count=held.count, reason=reason)
    await update.effective_message.reply_text(text, reply_markup=start_menu(context.texts, context.language))


async def show_help(update: Update, context: JarchyContext) -> None:
    """List the commands."""
    if update.effective_message is None:
        return
    commands = command_list(context.texts, context.language)
    text = context.text("help.text", commands=commands)
    roles = context.profile.roles if context.profile is not None else frozenset()
    # The role only shapes the help text; every coordinator command checks it again in the database.
    if roles:
        text += "\n\n" + context.text("help.coordinators")
    if "admin" in roles:
        text += "\n\n" + context.text("help.admins")
    await update.effective_message.reply_text(text)


def register(app: JarchyApp) -> None:
    """Answer /start and /help in private chats."""
    app.add_handler(CommandHandler("start", show_welcome, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("help", show_help, filters=PRIVATE_MESSAGES))
