"""Recognise the person behind every update before any feature handler runs."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ApplicationHandlerStop, TypeHandler

from bot.context import JarchyApp, JarchyContext
from bot.runtime.flood import Verdict, is_sos

GROUP = -10


async def recognise_user(update: Update, context: JarchyContext) -> None:
    """Hold back floods, then record the sender by pseudonym and put their profile on the context."""
    user = update.effective_user
    if user is None or user.is_bot:
        return
    key = context.services.pseudonyms.of_user(user.id)
    guard = context.services.flood
    # A real SOS (the command, the menu button, its confirmation) gets through a flood; only a few a
    # minute do, so forged presses with the SOS prefix are held back like anything else.
    if not (_urgent(update) and guard.urgent(key)):
        verdict = guard.check(key)
        if verdict is not Verdict.ALLOW:
            if (
                verdict is Verdict.WARN
                and update.effective_chat is not None
                and update.effective_chat.type == "private"
            ):
                language = context.texts.language(user.language_code)
                await update.effective_chat.send_message(context.texts.text(language, "flood.warning"))
            raise ApplicationHandlerStop
    context.profile = await context.services.users.seen(user.id, user.language_code)
    if update.effective_chat is not None and update.effective_chat.type == "private":
        # A backup bot in use can write to whoever writes to it: recorded once (BackupService.seen).
        await context.services.backups.seen(user.id, user.language_code)
    if context.profile.roles:
        # Coordinators from before the bot kept their Telegram id: it is stored now (once per process).
        await context.services.members.seen(user.id, context.profile.pseudonym)


def _urgent(update: Update) -> bool:
    message, query = update.effective_message, update.callback_query
    if query is not None:
        return is_sos(query.data or "", None)
    return message is not None and is_sos(None, message.text)


def register(app: JarchyApp) -> None:
    """Run recognise_user first for every update."""
    app.add_handler(TypeHandler(Update, recognise_user), group=GROUP)
