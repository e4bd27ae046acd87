"""The one error handler: log the traceback (never the message), tell the person something useful."""

from __future__ import annotations

import logging
import traceback

from telegram import Update
from telegram.error import NetworkError, TimedOut
from telegram.ext import ApplicationHandlerStop

from bot.context import JarchyApp, JarchyContext
from bot.runtime.update_run import AlreadyActed, current_run, may_pass_on_retry

log = logging.getLogger(__name__)

# Retry marks name which side failed: the inbox counts Telegram's silences against the attempts.
TELEGRAM_FAULT = "telegram:"
DATABASE_FAULT = "database:"


async def report_error(update: object, context: JarchyContext) -> None:
    """Log, mark transient failures for another try, and answer the person."""
    error = context.error
    update_id = update.update_id if isinstance(update, Update) else None
    if isinstance(error, AlreadyActed):
        # A retried update whose action an earlier run committed: nothing is done again, and the person
        # (whose first answer may have been lost) hears that it was done.
        log.info("update %s already acted (%s); not repeated", update_id, error.action)
        if isinstance(update, Update):
            await _tell_user(update, context, "update.already_done", alert=False)
        raise ApplicationHandlerStop
    unreachable = error is not None and _telegram_unreachable(error)
    transient = error is not None and (may_pass_on_retry(error) or unreachable)
    run = current_run()
    done_before_failing = run is not None and run.committed
    if isinstance(update, Update) and transient and not done_before_failing:
        fault = TELEGRAM_FAULT if unreachable else DATABASE_FAULT
        context.bot_data.retry_marks[update.update_id] = f"{fault}{type(error).__name__}"
    # The exception's text is left out: Telegram's error descriptions can quote what the user wrote
    # ("can't parse entities: … at byte offset …"), and database errors can quote values.
    frames = "".join(traceback.format_tb(error.__traceback__)) if error is not None else ""
    log.error(
        "handler failed for update %s (%s, transient=%s, acted=%s)\n%s",
        update_id,
        type(error).__name__,
        transient,
        done_before_failing,
        frames,
    )
    if (
        isinstance(update, Update)
        and update.effective_chat is not None
        and update.effective_chat.type == "private"
    ):
        if done_before_failing:
            key = "error.after_done"
        else:
            key = "error.retrying" if transient else "error.generic"
        await _tell_user(update, context, key)
    # Later handler groups would act on a half-handled update (a transient fault retries it whole).
    raise ApplicationHandlerStop


def _telegram_unreachable(error: BaseException) -> bool:
    # TimedOut and plain NetworkError mean Telegram did not answer; BadRequest and Forbidden (subclasses
    # of NetworkError) are answers, and retrying them would not help.
    return isinstance(error, TimedOut) or type(error) is NetworkError


async def _tell_user(update: Update, context: JarchyContext, key: str, *, alert: bool = True) -> None:
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(context.plain(key), show_alert=alert)
        elif update.effective_message is not None:
            await update.effective_message.reply_text(context.text(key))
    except Exception:
        log.warning("could not tell the user about an error", exc_info=True)


def register(app: JarchyApp) -> None:
    """Install the error handler."""
    app.add_error_handler(report_error)
