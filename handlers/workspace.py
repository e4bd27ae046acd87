"""Glue shared by the coordinators' handlers: where their commands may run, and how refusals read."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType

from bot.context import JarchyContext
from bot.services.roles import NotAllowed, Refused
from storage.reports import ReportNotFound

WorkspaceError = (NotAllowed, Refused, ReportNotFound)


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


def refusal(context: JarchyContext, error: Exception, *, plain: bool = False) -> str:
    """Return the text explaining why an action was refused: HTML for messages sent with
    ParseMode.HTML, `plain` for callback answers (which show text as it is)."""
    render = (lambda key, **p: context.texts.plain(context.language, key, **p)) if plain else context.text
    if isinstance(error, NotAllowed):
        return render("coord.admin_only" if error.admins_only else "coord.refused")
    if isinstance(error, Refused):
        return render(error.key, **error.params)
    if isinstance(error, ReportNotFound):
        return render("desk.not_found", code=str(error))
    raise error
