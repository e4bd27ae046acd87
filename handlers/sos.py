"""SOS: two taps to an urgent alert, then optional location and one line, then Done clears the chat."""

from __future__ import annotations

import contextlib

from telegram import Message, Update
from telegram.error import BadRequest
from telegram.ext import ApplicationHandlerStop, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import MenuPress, SosPress
from bot.domain.errors import LimitReached
from bot.send_limits import URGENT
from bot.services.reports.intake import Stale
from handlers.edits import edit_screen
from handlers.start import PRIVATE_MESSAGES
from messages.report_screens import render_sos_confirm, render_sos_followup

# Ahead of every other input (a campaign's text waits in group -3, a reply to a question in -2, a report or
# a guided command in -1): someone who opened an SOS while composing a campaign is sending where they are.
SOS_INPUT_GROUP = -4
_PRIVATE_INPUT = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE & ~filters.COMMAND


async def start_sos(update: Update, context: JarchyContext) -> None:
    """First tap: ask to confirm."""
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return
    if update.callback_query is not None:
        await update.callback_query.answer()
    reports = context.services.reports
    draft = await reports.sos_begin(user.id)
    if draft.step == "followup":
        # The "sent" screen again, with the reporter's own code as the first time.
        code = reports.reporter_code(draft.report_code) if draft.report_code is not None else ""
        text, keyboard = render_sos_followup(context.texts, context.language, draft, "sos.sent", code=code)
    else:
        header = await context.services.safewords.header(user.id, context.language)
        text, keyboard = render_sos_confirm(context.texts, context.language, draft, header)
    # The SOS screens go ahead of every other reply (the Application's types know no limiter arguments).
    sent = await context.bot.send_message(
        chat.id,
        text,
        reply_markup=keyboard,
        rate_limit_args=_urgency(chat.type),  # type: ignore[arg-type]
    )
    command = update.message.message_id if update.message is not None else None
    tracked = [m for m in (command, sent.message_id) if m is not None]
    await reports.track(user.id, "sos", draft.nonce, tracked)
    if draft.step == "followup":
        # It names the SOS like the first one, which leaves the phone after the keep time at the latest.
        await reports.delete_after_keep(chat.id, [sent.message_id])


async def press_sos_button(update: Update, context: JarchyContext) -> None:
    """Second tap sends; Cancel and Done close the SOS."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or query.data is None or user is None or chat is None:
        return
    press = SosPress.unpack(query.data)  # routed only when it does
    nonce, action = press.draft, press.action
    reports = context.services.reports
    message_id = query.message.message_id if query.message is not None else None
    try:
        if action == "go":
            # Sending queued this screen's deletion after the keep time (Done deletes it at once).
            submitted = await reports.sos_send(user.id, chat.id, nonce, message_id)
            draft = await reports.sos_begin(user.id)
            text, keyboard = render_sos_followup(
                context.texts, context.language, draft, "sos.sent", code=reports.reporter_code(submitted.code)
            )
            if isinstance(query.message, Message):
                # A double tap finds the message already showing this: "not modified" is fine.
                with contextlib.suppress(BadRequest):
                    await edit_screen(query.message, text, keyboard, rate_limit_args=_urgency(chat.type))
            await query.answer()
        elif action == "cancel":
            await reports.sos_cancel(user.id, nonce)
            if isinstance(query.message, Message):
                await query.message.edit_text(context.text("sos.cancelled"))
            await query.answer()
        elif action == "done":
            await reports.sos_finish(user.id, chat.id, nonce, message_id)
            await query.answer(context.text("sos.closed"))
        else:
            await query.answer(context.text("callback.stale"))
    except Stale:
        await query.answer(context.text("report.expired"), show_alert=True)
    except LimitReached as limit:
        await query.answer(context.text(limit.key, **limit.params), show_alert=True)


async def route_sos_input(update: Update, context: JarchyContext) -> bool:
    """Pass a line or a location to the coordinators if an SOS is waiting for one; True if it was."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or (message.text is None and message.location is None):
        return False
    location = (message.location.latitude, message.location.longitude) if message.location else None
    screen = await context.services.reports.sos_followup(
        user.id, message.message_id, text=message.text if location is None else None, location=location
    )
    if screen is None:
        return False
    text, keyboard = render_sos_followup(
        context.texts, context.language, screen.draft, "sos.followup_sent", screen.error
    )
    sent = await message.reply_text(text, reply_markup=keyboard)
    await context.services.reports.track(user.id, "sos", screen.draft.nonce, [sent.message_id])
    return True


async def take_sos_input(update: Update, context: JarchyContext) -> None:
    """Stop here when an SOS took the input; otherwise let the other inputs look at it."""
    if await route_sos_input(update, context):
        raise ApplicationHandlerStop


def _urgency(chat_type: str) -> dict[str, object] | None:
    # Only an SOS screen in a private chat goes ahead of other replies: a press in a group does not.
    return URGENT if chat_type == "private" else None


def register(app: JarchyApp) -> None:
    """Handle /sos and its buttons."""
    app.add_handler(CommandHandler("sos", start_sos, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(start_sos, pattern=MenuPress.where(item="sos")))
    app.add_handler(CallbackQueryHandler(press_sos_button, pattern=SosPress.matches))
    app.add_handler(MessageHandler(_PRIVATE_INPUT, take_sos_input), group=SOS_INPUT_GROUP)
