"""/safeword and /verify: what lets a person tell this bot from a clone."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain.identity import CLEAR_SAFEWORD, BadSafeword, BadUsername
from handlers.start import PRIVATE_MESSAGES
from messages.identity_screens import official_list


async def set_safeword(update: Update, context: JarchyContext) -> None:
    """Set, change or clear the person's safety word; the message that carried it leaves the chat."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    safewords = context.services.safewords
    raw = _argument(message.text)
    if not raw:
        has_word = await safewords.of_person(user.id) is not None
        await message.reply_text(context.text("safeword.is_set" if has_word else "safeword.usage"))
        return
    # Whatever it says, the word (or a near miss of it) must not stay on the phone: queued, so retried.
    await context.services.reports.delete_later(chat.id, [message.message_id])
    if raw == CLEAR_SAFEWORD:
        cleared = await safewords.clear(user.id)
        await chat.send_message(context.text("safeword.cleared" if cleared else "safeword.none"))
        return
    try:
        await safewords.choose(user.id, raw)
    except BadSafeword as error:
        await chat.send_message(context.text(error.key, **error.params))
        return
    await chat.send_message(context.text("safeword.saved"))


async def verify_bot(update: Update, context: JarchyContext) -> None:
    """Say whether a username is one of the organisation's bots."""
    message = update.effective_message
    if message is None:
        return
    official = context.services.official
    own = context.bot.username
    raw = _argument(message.text)
    example = own or "jarchy_bot"
    if not raw:
        await message.reply_text(context.text("verify.usage", example=example))
        return
    try:
        verdict = official.check(own, raw.split()[0])
    except BadUsername:
        await message.reply_text(context.text("verify.malformed", example=example))
        return
    key = "verify.official" if verdict.official else "verify.foreign"
    await message.reply_text(context.text(key, name=verdict.name, official=official_list(verdict.names)))


def _argument(text: str | None) -> str:
    """Return what follows the command, as typed (the /command@bot part dropped)."""
    parts = (text or "").split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


def register(app: JarchyApp) -> None:
    """Handle /safeword and /verify in private chats."""
    app.add_handler(CommandHandler("safeword", set_safeword, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("verify", verify_bot, filters=PRIVATE_MESSAGES))
