"""The anonymous channel: /ask (or a reply to an alert card) from coordinators, answers from reporters."""

from __future__ import annotations

from telegram import Message, Update
from telegram.ext import ApplicationHandlerStop, CommandHandler, MessageHandler, filters

from bot.context import JarchyApp, JarchyContext
from bot.services.reports.body import find_code
from handlers.workspace import WorkspaceError, in_workspace, refusal

# Ahead of the report form's input router (group -1): an answer to a question is not draft input.
ANSWER_GROUP = -2
_REPLY_TEXT = filters.REPLY & filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE


async def ask_reporter(update: Update, context: JarchyContext) -> None:
    """/ask R-7K3QX question, or /ask question as a reply to the alert card."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "contact.ask"):
        return
    parts = (message.text or "").split(maxsplit=1)
    rest = parts[1] if len(parts) > 1 else ""
    code, question = _code_and_text(rest, _bot_message_text(message, context))
    if code is None or not question.strip():
        await message.reply_text(context.text("contact.ask_usage"))
        return
    await _ask(message, context, user.id, code, question)


async def reply_to_card(update: Update, context: JarchyContext) -> None:
    """In the coordinators' chat, a reply to a report's alert card itself is a question to its reporter.

    Replies to anything else the bot posted (evidence, lists, relayed answers) stay among colleagues:
    a remark meant for the team must never reach the reporter by accident.
    """
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None or message.text is None:
        return
    replied = message.reply_to_message
    code = find_code(_bot_message_text(message, context))
    if replied is None or code is None or not await context.services.alerts.is_coordinator_chat(chat.id):
        return
    if not await context.services.triage.is_card(code, chat.id, replied.message_id):
        return
    await _ask(message, context, user.id, code, message.text)


async def answer_question(update: Update, context: JarchyContext) -> None:
    """A reporter's reply to the bot's question goes back to the coordinators, without their name."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None or message.text is None:
        return
    replied = message.reply_to_message
    text = _bot_message_text(message, context)
    if replied is None or text is None:
        return
    try:
        answered = await context.services.contact.answer(
            user.id, chat.id, replied.message_id, text, message.message_id, message.text
        )
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        raise ApplicationHandlerStop from None
    if answered is None:
        return  # not an answer to one of their questions: other handlers decide
    await message.reply_text(context.text("contact.answer_passed", code=answered.code))
    raise ApplicationHandlerStop


async def _ask(message: Message, context: JarchyContext, user_id: int, code: str, question: str) -> None:
    try:
        sent = await context.services.contact.ask(user_id, code, question)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_text(context.text("contact.asked", code=sent))


def _code_and_text(rest: str, replied: str | None) -> tuple[str | None, str]:
    first, _, remainder = rest.strip().partition(" ")
    if find_code(first.upper()) is not None or first.upper().startswith("R-"):
        return first, remainder.strip()
    return find_code(replied), rest.strip()


def _bot_message_text(message: Message, context: JarchyContext) -> str | None:
    """Return the text of the bot's own message this one replies to, if it does."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != context.bot.id:
        return None
    return replied.text or replied.caption


def register(app: JarchyApp) -> None:
    """Handle /ask, replies to cards in the coordinators' chat, and reporters' answers."""
    app.add_handler(CommandHandler("ask", ask_reporter))
    app.add_handler(MessageHandler(_REPLY_TEXT & filters.ChatType.GROUPS, reply_to_card))
    app.add_handler(
        MessageHandler(_REPLY_TEXT & filters.ChatType.PRIVATE, answer_question), group=ANSWER_GROUP
    )
