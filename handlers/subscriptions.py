"""Subscribers: /subscribe, /unsubscribe, and /settings (topics, language, hearing reminders)."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import SubscriptionPress
from bot.services.campaigns.compose import TOPICS
from handlers.cases import show_settings as show_reminder_settings
from handlers.start import PRIVATE_MESSAGES
from handlers.workspace import WorkspaceError, refusal
from messages.menus import language_keyboard


async def subscribe(update: Update, context: JarchyContext) -> None:
    """Subscribe to campaigns, hearing news and urgent alerts; show the topic toggles."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    topics = await context.services.campaigns.subscribe(user.id, chat.id)
    await message.reply_text(
        context.text("subscribe.done"),
        reply_markup=_topics_keyboard(context, topics),
    )


async def unsubscribe(update: Update, context: JarchyContext) -> None:
    """Stop everything at once, including messages already queued."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    withdrawn = await context.services.campaigns.unsubscribe(user.id)
    await message.reply_text(context.text("subscribe.stopped", withdrawn=withdrawn))


async def show_settings(update: Update, context: JarchyContext) -> None:
    """Topics and language first, then the hearing reminders."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    topics = await context.services.campaigns.topics(user.id) or frozenset()
    invite = await context.services.backups.invitation(user.id, "settings", context.language)
    await message.reply_text(
        context.text("subscribe.settings") + (f"\n\n{invite}" if invite else ""),
        reply_markup=_topics_keyboard(context, topics),
    )
    await show_reminder_settings(update, context)


async def toggle_topic(update: Update, context: JarchyContext) -> None:
    """Turn one topic on or off."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or user is None or chat is None or query.data is None:
        return
    topic = SubscriptionPress.unpack(query.data).topic  # routed only when it unpacks
    if topic == "lang":
        await query.answer()
        await chat.send_message(
            context.text("language.prompt"), reply_markup=language_keyboard(context.language)
        )
        return
    try:
        topics = await context.services.campaigns.toggle_topic(user.id, chat.id, topic)
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)
        return
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=_topics_keyboard(context, topics))
    await query.answer(context.plain("subscribe.saved"))


def _topics_keyboard(context: JarchyContext, topics: frozenset[str]) -> InlineKeyboardMarkup:
    rows = [
        [
            InlineKeyboardButton(
                ("✅ " if topic in topics else "▫️ ")
                + context.texts.plain(context.language, f"subscribe.topic_{topic}"),
                callback_data=SubscriptionPress(topic).pack(),
            )
        ]
        for topic in TOPICS
    ]
    rows.append(
        [
            InlineKeyboardButton(
                context.texts.plain(context.language, "subscribe.language"),
                callback_data=SubscriptionPress("lang").pack(),
            )
        ]
    )
    return InlineKeyboardMarkup(rows)


def register(app: JarchyApp) -> None:
    """Handle the subscriber commands (private chats) and the topic buttons."""
    app.add_handler(CommandHandler("subscribe", subscribe, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("unsubscribe", unsubscribe, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("settings", show_settings, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(toggle_topic, pattern=SubscriptionPress.matches))
