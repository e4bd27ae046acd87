"""The one error handler: log the traceback (never the message), tell the person something useful."""

from __future__ import annotations

import logging
import traceback

from telegram import Update
from telegram.error import NetworkError, TimedOut
from telegram.ext import Application, ApplicationHandlerStop

from bot.context import JarchyContext
from storage.database import is_transient

log = logging.getLogger(__name__)


async def report_error(update: object, context: JarchyContext) -> None:
    """Log, mark transient failures for another try, and answer the person."""
    error = context.error
    update_id = update.update_id if isinstance(update, Update) else None
    transient = error is not None and (is_transient(error) or _telegram_unreachable(error))
    if isinstance(update, Update) and transient:
        context.bot_data.retry_marks[update.update_id] = type(error).__name__
    # The exception's text is left out: Telegram's error descriptions can quote what the user wrote
    # ("can't parse entities: … at byte offset …"), and database errors can quote values.
    frames = "".join(traceback.format_tb(error.__traceback__)) if error is not None else ""
    log.error(
        "handler failed for update %s (%s, transient=%s)\n%s",
        update_id,
        type(error).__name__,
        transient,
        frames,
    )
    if (
        isinstance(update, Update)
        and update.effective_chat is not None
        and update.effective_chat.type == "private"
    ):
        await _tell_user(update, context, "error.retrying" if transient else "error.generic")
    # Later handler groups would act on a half-handled update (a transient fault retries it whole).
    raise ApplicationHandlerStop


def _telegram_unreachable(error: BaseException) -> bool:
    # TimedOut and plain NetworkError mean Telegram did not answer; BadRequest and Forbidden (subclasses
    # of NetworkError) are answers, and retrying them would not help.
    return isinstance(error, TimedOut) or type(error) is NetworkError


async def _tell_user(update: Update, context: JarchyContext, key: str) -> None:
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(context.text(key), show_alert=True)
        elif update.effective_message is not None:
            await update.effective_message.reply_text(context.text(key))
    except Exception:
        log.warning("could not tell the user about an error", exc_info=True)


def register(app: Application) -> None:
    """Install the error handler."""
    app.add_error_handler(report_error)
