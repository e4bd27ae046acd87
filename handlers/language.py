"""/language: pick one of the four languages with a button; the choice is stored."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import LanguagePress, TimezonePress
from bot.services.access.users import TIMEZONES, UnknownLanguage
from handlers.start import PRIVATE_MESSAGES
from messages.menus import language_keyboard


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
    code = LanguagePress.unpack(query.data).code  # routed only when it unpacks
    try:
        context.profile = await context.services.users.choose_language(query.from_user.id, code)
    except UnknownLanguage:
        await query.answer(context.text("callback.stale"), show_alert=True)
        return
    await query.answer()
    if query.message is not None:
        await query.edit_message_text(context.text("language.changed"))


async def ask_timezone(update: Update, context: JarchyContext) -> None:
    """Offer the region's time zones for showing hearing times."""
    if update.effective_message is None:
        return
    keyboard = InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(zone, callback_data=TimezonePress(index).pack())]
            for index, zone in enumerate(TIMEZONES)
        ]
    )
    await update.effective_message.reply_text(context.text("timezone.prompt"), reply_markup=keyboard)


async def choose_timezone(update: Update, context: JarchyContext) -> None:
    """Store the chosen time zone."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    index = TimezonePress.unpack(query.data).index  # routed only when it unpacks
    if index >= len(TIMEZONES):
        await query.answer(context.text("callback.stale"), show_alert=True)
        return
    zone = TIMEZONES[index]
    await context.services.users.choose_timezone(query.from_user.id, zone)
    if query.message is not None:
        await query.edit_message_text(context.text("timezone.changed", zone=zone))
    await query.answer()


def register(app: JarchyApp) -> None:
    """Handle /language, /timezone and their buttons."""
    app.add_handler(CommandHandler("language", ask_language, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(choose_language, pattern=LanguagePress.matches))
    app.add_handler(CommandHandler("timezone", ask_timezone, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(choose_timezone, pattern=TimezonePress.matches))
