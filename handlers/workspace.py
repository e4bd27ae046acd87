"""Glue shared by the coordinators' handlers: where their commands may run, and how refusals read."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType

from bot.context import JarchyContext
from bot.domain.errors import Refused

# Every refusal a coordinators' action can end in: no role (NotAllowed), bad input, a missing report...
WorkspaceError = (Refused,)
# Refusals whose full text is longer than a callback alert's 200 characters: a button shows the short form.
ALERT_VARIANTS = {"desk.tampered": "desk.tampered_alert"}


async def in_workspace(update: Update, context: JarchyContext, action: str) -> bool:
    """Allow coordinators' commands only in a private chat or the coordinators' chat.

    Anywhere else (a public group someone added the bot to) they could show reports to strangers: the
    attempt is refused, audited, and answered without showing anything.
    """
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None:
        return False
    if chat.type == ChatType.PRIVATE or await context.services.alerts.is_coordinator_chat(chat.id):
        return True
    await context.services.gate.refuse(user.id, action, detail="wrong chat")
    if update.effective_message is not None:
        await update.effective_message.reply_text(context.text("coord.wrong_chat"))
    return False


async def pressed_in_workspace(
    update: Update,
    context: JarchyContext,
    action: str,
    *,
    private_only: bool = False,
    name_actor: bool = True,
) -> bool:
    """Allow a coordinators' button only where such a button is issued: the presser's own private chat,
    or (unless `private_only`) the coordinators' chat.

    Callback data can be forged onto any message of the bot, in any chat it is in; a button whose answer
    is posted or edited in place must never show a report to that chat. Refused presses are audited and
    answered with an alert that shows nothing.
    """
    query, chat, user = update.callback_query, update.effective_chat, update.effective_user
    if query is None or user is None:
        return False
    if chat is not None and chat.type == ChatType.PRIVATE and chat.id == user.id:
        return True
    if (
        chat is not None
        and not private_only
        and chat.type != ChatType.PRIVATE
        and await context.services.alerts.is_coordinator_chat(chat.id)
    ):
        return True
    await context.services.gate.refuse(user.id, action, detail="wrong chat", name_actor=name_actor)
    await query.answer(context.plain("coord.wrong_chat"), show_alert=True)
    return False


def refusal(context: JarchyContext, error: Exception, *, plain: bool = False) -> str:
    """Return the text explaining why an action was refused: HTML for messages (the default parse mode),
    `plain` for callback answers and the messages that reuse them (sent with parse_mode=None)."""
    render = (lambda key, **p: context.texts.plain(context.language, key, **p)) if plain else context.text
    if isinstance(error, Refused):
        key = ALERT_VARIANTS.get(error.key, error.key) if plain else error.key
        return render(key, **error.params)
    raise error
