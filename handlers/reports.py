"""The guided report: /report, its buttons, and what the person types or sends at each step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from telegram import InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import MenuPress, ReportPress
from bot.domain.errors import LimitReached
from bot.services.reports.evidence import MAX_FILE_BYTES, MB, DownloadFailed, EvidenceRefused, download_chunks
from bot.services.reports.intake import FileInput, Screen, Stale
from handlers.case_commands import route_flow_input
from handlers.edits import edit_screen
from handlers.start import PRIVATE_MESSAGES
from messages.report_screens import render_receipt, render_resume, render_step

INPUT_GROUP = -1
_PRIVATE_INPUT = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE & ~filters.COMMAND


async def start_report(update: Update, context: JarchyContext) -> None:
    """Start a report, or offer to continue the unfinished one."""
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return
    if update.callback_query is not None:
        await update.callback_query.answer()
    await context.services.flows.set_aside(user.id)
    screen = await context.services.reports.begin(user.id)
    texts, lang = context.texts, context.language
    if screen.resumed:
        text, keyboard = render_resume(texts, lang, screen.draft)
    else:
        header = await _header(context, user.id, screen)
        text, keyboard = render_step(
            texts, lang, screen.draft, context.bot_data.settings.timezone, header=header
        )
    sent = await chat.send_message(text, reply_markup=keyboard)
    # The /report command itself goes with the conversation too.
    command = update.message.message_id if update.message is not None else None
    tracked = [m for m in (command, sent.message_id) if m is not None]
    await context.services.reports.track(user.id, "report", screen.draft.nonce, tracked)


async def press_report_button(update: Update, context: JarchyContext) -> None:
    """Apply a button of the current step; old buttons change nothing."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or query.data is None or user is None or chat is None:
        return
    press = ReportPress.unpack(query.data)  # routed only when it does
    nonce, step, action, arg = press.draft, press.step, press.action, press.arg
    reports = context.services.reports
    message_id = query.message.message_id if query.message is not None else None
    try:
        if action == "submit":
            submitted = await reports.submit(user.id, chat.id, nonce, message_id)
            # The reporter's own code: the coordinators' one on a seized phone would name the report to
            # any insider. Submitting queued the receipt's deletion after the keep time.
            receipt = render_receipt(
                context.texts,
                context.language,
                reports.reporter_code(submitted.code),
                submitted.contactable,
                context.bot_data.settings.phone_keep_hours,
            )
            # The review screen becomes the receipt: a double tap edits it to the same text (one
            # receipt), and the report's summary leaves the phone with it.
            if isinstance(query.message, Message):
                try:
                    await edit_screen(query.message, receipt)
                except BadRequest as error:
                    if "not modified" not in str(error).lower():
                        # The review (the report's summary) must not stay on the phone.
                        await reports.delete_later(chat.id, [query.message.message_id])
                        sent = await chat.send_message(receipt)
                        await reports.delete_after_keep(chat.id, [sent.message_id])
            elif not submitted.already:
                sent = await chat.send_message(receipt)
                await reports.delete_after_keep(chat.id, [sent.message_id])
            await query.answer()
            if submitted.contactable and not submitted.already:
                # Never after an anonymous report: recording the invitation would date it.
                invite = await context.services.backups.invitation(user.id, "report", context.language)
                if invite:
                    await chat.send_message(invite)
            return
        if action == "cancel":
            await reports.cancel(user.id, chat.id, nonce, message_id)
            await chat.send_message(context.text("report.cancelled"))
            await query.answer()
            return
        if action == "restart":
            screen = await reports.restart(user.id, nonce)
        else:
            screen = await reports.press(user.id, nonce, step, action, arg, message_id)
    except Stale:
        await query.answer(context.text("report.expired"), show_alert=True)
        return
    except LimitReached as limit:
        await query.answer(context.text(limit.key, **limit.params), show_alert=True)
        return
    text, keyboard = render_step(
        context.texts,
        context.language,
        screen.draft,
        context.bot_data.settings.timezone,
        screen.error,
        header=await _header(context, user.id, screen),
    )
    if isinstance(query.message, Message):
        await _edit_or_send(context, query.message, text, keyboard, user.id, screen)
    # Answered last: the answer tells the person (and the tests) that the step is done.
    await query.answer()


async def route_input(update: Update, context: JarchyContext) -> None:
    """Give what the person typed or sent to the guided command or the report that waits for it, in that
    order (an SOS waiting for a line had it first: handlers.sos)."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    # A coordinator's guided command next: it waits only while one was started, and only for text.
    if await route_flow_input(update, context):
        raise ApplicationHandlerStop
    reports = context.services.reports
    screen: Screen | None
    if message.text is not None:
        screen = await reports.input_text(user.id, message.text, message.message_id)
    elif message.location is not None:
        screen = await reports.input_location(
            user.id, message.location.latitude, message.location.longitude, message.message_id
        )
    elif (item := _file_of(message)) is not None:
        bot = context.bot

        async def download() -> AsyncIterator[bytes]:
            # Streamed from the file's URL a chunk at a time: a 20 MB video is never whole in memory.
            try:
                file = await bot.get_file(item.file_id)
            except BadRequest as error:
                if "too big" in str(error).lower():
                    raise EvidenceRefused("report.file_too_big", limit=MAX_FILE_BYTES // MB) from None
                raise DownloadFailed("Telegram refused getFile") from None
            except TelegramError:
                raise DownloadFailed("getFile failed") from None
            if not file.file_path:
                raise DownloadFailed("Telegram gave no file_path")
            # Closed explicitly when the store stops early (a quota crossed midway): no socket is left open.
            settings = context.bot_data.settings
            chunks = download_chunks(
                file.file_path, proxy_url=settings.proxy_url, local_mode=settings.api_local_mode
            )
            async with aclosing(chunks) as pieces:
                async for piece in pieces:
                    yield piece

        screen = await reports.input_file(user.id, item, message.message_id, download)
    else:
        screen = await reports.input_other(user.id, message.message_id)
    if screen is None:
        return  # no draft waits for input: the fallback answers
    text, keyboard = render_step(
        context.texts,
        context.language,
        screen.draft,
        context.bot_data.settings.timezone,
        screen.error,
        header=await _header(context, user.id, screen),
    )
    sent = await message.reply_text(text, reply_markup=keyboard)
    await reports.track(user.id, "report", screen.draft.nonce, [sent.message_id])
    raise ApplicationHandlerStop


async def _header(context: JarchyContext, user_id: int, screen: Screen) -> str:
    """Return the person's safety word line for the review screen ("" on other steps: no lookup)."""
    if screen.draft.step != "review":
        return ""
    return await context.services.safewords.header(user_id, context.language)


async def _edit_or_send(
    context: JarchyContext,
    message: Message,
    text: str,
    keyboard: InlineKeyboardMarkup,
    user_id: int,
    screen: Screen,
) -> None:
    try:
        await edit_screen(message, text, keyboard)
    except BadRequest:
        # Too old to edit, or unchanged: a fresh prompt does the same job.
        sent = await message.chat.send_message(text, reply_markup=keyboard)
        await context.services.reports.track(user_id, "report", screen.draft.nonce, [sent.message_id])


def _file_of(message: Message) -> FileInput | None:
    if message.photo:
        largest = message.photo[-1]
        return FileInput("photo", largest.file_unique_id, largest.file_id, largest.file_size)
    for kind in ("video", "voice", "audio", "document", "video_note"):
        attachment = getattr(message, kind)
        if attachment is not None:
            return FileInput(kind, attachment.file_unique_id, attachment.file_id, attachment.file_size)
    return None


def register(app: JarchyApp) -> None:
    """Handle /report, its buttons, and input while a draft waits."""
    app.add_handler(CommandHandler("report", start_report, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(start_report, pattern=MenuPress.where(item="report")))
    app.add_handler(CallbackQueryHandler(press_report_button, pattern=ReportPress.matches))
    app.add_handler(MessageHandler(_PRIVATE_INPUT, route_input), group=INPUT_GROUP)
