"""Whatever no feature handled: a polite pointer to /help in private chats, silence elsewhere."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, MessageHandler, filters

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import Callback

_PRIVATE_NEW = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE


async def answer_unknown_command(update: Update, context: JarchyContext) -> None:
    """Say the command is unknown."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(context.text("fallback.unknown_command"))


async def answer_not_understood(update: Update, context: JarchyContext) -> None:
    """Point free text, stickers and media to /help."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(context.text("fallback.not_understood"))


async def answer_stale_button(update: Update, context: JarchyContext) -> None:
    """Tell the presser a button is not (or no longer) valid, so their app stops spinning.

    Data no family unpacks is forged, cut or from an older version: it is audited, as every refusal is, by
    family only (the rest of the data is the presser's to choose) and without naming the presser, since
    followers and subscribers press buttons too and the log outlives /forget."""
    query = update.callback_query
    if query is None:
        return
    family = Callback.family_of(query.data)
    await context.services.gate.refuse(
        query.from_user.id,
        "button.unmatched",
        detail=family.prefix if family is not None else "unknown",
        name_actor=False,
    )
    await query.answer(context.text("callback.stale"), show_alert=False)


def register(app: JarchyApp) -> None:
    """Register last, so every feature handler gets its chance first."""
    app.add_handler(MessageHandler(_PRIVATE_NEW & filters.COMMAND, answer_unknown_command))
    app.add_handler(MessageHandler(_PRIVATE_NEW & ~filters.COMMAND, answer_not_understood))
    app.add_handler(CallbackQueryHandler(answer_stale_button))
