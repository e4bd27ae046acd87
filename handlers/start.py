"""/start and /help: what the bot is for, what it does about safety, and the commands."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CommandHandler, filters

from bot.context import JarchyApp, JarchyContext
from messages.menus import command_list, help_screen, start_menu

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
    user = update.effective_user
    if user is not None:
        invite = await context.services.backups.invitation(user.id, "start", context.language)
        if invite:
            text += "\n\n" + invite
    await update.effective_message.reply_text(text, reply_markup=start_menu(context.texts, context.language))


async def show_help(update: Update, context: JarchyContext) -> None:
    """List the commands, and how to stay reachable where Telegram is blocked."""
    if update.effective_message is None:
        return
    roles = context.profile.roles if context.profile is not None else frozenset()
    text = help_screen(
        context.texts,
        context.language,
        roles=roles,
        proxy_link=context.bot_data.settings.proxy_link,
        backup=context.services.backups.invited_bot(),
    )
    await update.effective_message.reply_text(text)


def register(app: JarchyApp) -> None:
    """Answer /start and /help in private chats."""
    app.add_handler(CommandHandler("start", show_welcome, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("help", show_help, filters=PRIVATE_MESSAGES))
