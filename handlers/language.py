"""/language: pick one of the four languages with a button; the choice is stored."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler

from bot.context import JarchyContext
from bot.services.users import UnknownLanguage
from handlers.start import PRIVATE_MESSAGES
from messages.menus import LANGUAGE_CALLBACK_PREFIX, language_keyboard


async def ask_language(update: Update, context: JarchyContext) -> None:
    """Offer the languages."""
    if update.effective_message is None:
        return
    await update.effective_message.reply_text(
        context.text("language.prompt"), reply_markup=language_keyboard(context.language)
    )


async def choose_language(update: Update, context: JarchyContext) -> None:
    """Store the chosen language and confirm in it."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    code = query.data.removeprefix(LANGUAGE_CALLBACK_PREFIX)
    try:
        context.profile = await context.services.users.choose_language(query.from_user.id, code)
    except UnknownLanguage:
        await query.answer(context.text("callback.stale"), show_alert=True)
        return
    await query.answer()
    if query.message is not None:
        await query.edit_message_text(context.text("language.changed"))


def register(app: Application) -> None:
    """Handle /language and its buttons."""
    app.add_handler(CommandHandler("language", ask_language, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(choose_language, pattern=f"^{LANGUAGE_CALLBACK_PREFIX}"))
