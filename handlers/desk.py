"""The coordinators' desk: /reports, /r, /note, /find, /stats, and the admins' /audit and /export."""

from __future__ import annotations

import asyncio

from telegram import InputFile, Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain import dates
from bot.domain.callbacks import ReportListPage
from bot.services.desk.browse import decode_query
from bot.services.desk.export import FORMATS
from bot.services.reports.evidence import BOUND, EvidenceDamaged
from handlers.start import PRIVATE_MESSAGES
from handlers.workspace import WorkspaceError, in_workspace, pressed_in_workspace, refusal
from handlers.workspace_screens import audit_list, found_list, report_page, report_view, stats_caption

# Telegram bots may upload documents up to 50 MB.
UPLOAD_LIMIT = 50 * 1024 * 1024
_EXTENSIONS = {"photo": "jpg", "video": "mp4", "video_note": "mp4", "voice": "ogg", "audio": "mp3"}


async def list_reports(update: Update, context: JarchyContext) -> None:
    """/reports [status=… category=… region=… assignee=me|none|NAME since=7d|YYYY-MM-DD]."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "desk.list"):
        return
    desk = context.services.desk
    try:
        query = await desk.parse_query(user.id, context.args or [])
        page = await desk.page(user.id, query)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    text, keyboard = report_page(context.texts, context.language, page, context.bot_data.settings.timezone, 1)
    await message.reply_text(text, reply_markup=keyboard)


async def next_page(update: Update, context: JarchyContext) -> None:
    """The Next button under a list: rl:PAGE:BEFORE_ID:FILTERS."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None or query.data is None:
        return
    # The page is posted where the button is pressed: never into a chat the list was not shown in.
    if not await pressed_in_workspace(update, context, "desk.list"):
        return
    press = ReportListPage.unpack(query.data)  # routed only when it unpacks
    try:
        page = await context.services.desk.page(user.id, decode_query(press.filters), press.before)
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)
        return
    await query.answer()
    text, keyboard = report_page(
        context.texts, context.language, page, context.bot_data.settings.timezone, press.page
    )
    if update.effective_chat is not None:
        await update.effective_chat.send_message(text, reply_markup=keyboard)


async def show_report(update: Update, context: JarchyContext) -> None:
    """/r R-7K3QX: the whole report, its notes and history, and its evidence from the encrypted store."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "desk.view"):
        return
    if not context.args:
        await message.reply_text(context.text("desk.view_usage"))
        return
    desk = context.services.desk
    try:
        view = await desk.view(user.id, context.args[0])
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    for text in report_view(context.texts, context.language, view, context.bot_data.settings.timezone):
        await message.reply_text(text)
    code, total = view.report.code, len(view.evidence)
    for index, (item, check) in enumerate(zip(view.evidence, view.evidence_checks, strict=True), 1):
        if check != BOUND:
            # Its record was moved here from another report or edited: sending it would present another
            # report's file, or a changed one, as this report's evidence.
            warning = context.text("evidence.moved", index=index, total=total, sha256=item.sha256)
            await message.reply_text(warning)
            continue
        name = f"{code}-{index}.{_EXTENSIONS.get(item.kind, 'bin')}"
        caption = context.text(
            "alert.evidence_caption", code=code, index=index, total=total, sha256=item.sha256
        )
        try:
            async with desk.open_evidence(item) as content:
                await message.reply_document(InputFile(content, filename=name), caption=caption)
        except EvidenceDamaged:
            damaged = context.text("evidence.damaged", index=index, total=total, sha256=item.sha256)
            await message.reply_text(damaged)


async def add_note(update: Update, context: JarchyContext) -> None:
    """/note R-7K3QX text: an internal note only coordinators see."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "desk.note"):
        return
    # The note keeps its line breaks: take it from the text, not from the space-split arguments.
    parts = (message.text or "").split(maxsplit=2)
    if len(parts) < 3:
        await message.reply_text(context.text("desk.note_usage"))
        return
    try:
        code = await context.services.desk.note(user.id, parts[1], parts[2])
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_text(context.text("desk.note_added", code=code))


async def find_reports(update: Update, context: JarchyContext) -> None:
    """/find word…: reports whose text, place or people contain every word."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "desk.find"):
        return
    try:
        hits, scanned = await context.services.desk.find(user.id, " ".join(context.args or []))
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    for text in found_list(
        context.texts, context.language, hits, scanned, context.bot_data.settings.timezone
    ):
        await message.reply_text(text)


async def show_audit(update: Update, context: JarchyContext) -> None:
    """/audit (admins, in private): the latest audit entries."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    services = context.services
    try:
        entries, names = await services.team.recent_audit(user.id)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_text(audit_list(context.texts, context.language, entries, names))


async def export_reports(update: Update, context: JarchyContext) -> None:
    """/export [filters as /reports] (admins, in private): a CSV and a JSON document."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    services = context.services
    try:
        query = await services.desk.parse_query(user.id, context.args or [])
        await services.exports.allow(user.id, query, FORMATS)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_text(context.text("export.started"))
    stamp = dates.file_stamp(services.clock.now())
    async with services.exports.files(context.bot_data.settings.data_dir / "exports", FORMATS) as files:
        summary = await services.exports.write(query, files.handles)
        ready = await asyncio.to_thread(files.fit, UPLOAD_LIMIT)
        if ready is None:
            await message.reply_text(context.text("export.too_large"))
            return
        for fmt, (path, suffix) in ready.items():
            # Telegram's upload takes the bytes in memory: at most UPLOAD_LIMIT, checked just above.
            content = await asyncio.to_thread(path.read_bytes)
            await message.reply_document(
                InputFile(content, filename=f"jarchy-reports-{stamp}.{fmt}{suffix}"),
                caption=context.plain("export.done", rows=summary.rows, format=fmt.upper()),
                parse_mode=None,  # a plain rendering
            )


async def send_stats(update: Update, context: JarchyContext) -> None:
    """/stats: a chart of the last 12 weeks, with the counts in the caption."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "stats"):
        return
    try:
        picture = await context.services.stats.picture(user.id, context.language)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_photo(
        InputFile(picture.png, filename="jarchy-weeks.png"),
        caption=stats_caption(context.texts, context.language, picture.counts),
        parse_mode=None,  # stats_caption renders plain
    )


def register(app: JarchyApp) -> None:
    """Handle the desk commands; /audit and /export only in private chats."""
    app.add_handler(CommandHandler("reports", list_reports))
    app.add_handler(CommandHandler("r", show_report))
    app.add_handler(CommandHandler("note", add_note))
    app.add_handler(CommandHandler("find", find_reports))
    app.add_handler(CommandHandler("stats", send_stats))
    app.add_handler(CommandHandler("audit", show_audit, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("export", export_reports, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(next_page, pattern=ReportListPage.matches))
