"""The reporter's side afterwards: /myreports and /forget."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain import dates
from bot.domain.callbacks import ForgetPress
from bot.services.reports.intake import OwnReport
from handlers.start import PRIVATE_MESSAGES


async def list_my_reports(update: Update, context: JarchyContext) -> None:
    """List the person's contactable reports with their status, under their own codes."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    service = context.services.reports
    reports = await service.my_reports(user.id)
    if not reports:
        sent = await message.reply_text(context.text("myreports.empty"))
    else:
        sent = await message.reply_text(_listing(context, reports))
    # The answer and the command that asked for it leave the phone after the keep time.
    await service.delete_after_keep(message.chat_id, [message.message_id, sent.message_id])


def _listing(context: JarchyContext, reports: list[OwnReport]) -> str:
    zone = context.bot_data.settings.timezone
    lines = [
        context.text(
            "myreports.line",
            code=r.code,
            category=context.text(f"category.{r.category}"),
            status=context.text(f"status.{r.status}"),
            date=dates.day(r.created_at, zone),
        )
        for r in reports
    ]
    return context.text("myreports.header") + "\n" + "\n".join(lines)


async def ask_to_forget(update: Update, context: JarchyContext) -> None:
    """Explain what /forget erases and ask to confirm."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    if await _holds_a_role(update, context, user.id):
        return
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    context.texts.plain(context.language, "forget.confirm"),
                    callback_data=ForgetPress("yes").pack(),
                )
            ],
            [
                InlineKeyboardButton(
                    context.texts.plain(context.language, "button.cancel"),
                    callback_data=ForgetPress("no").pack(),
                )
            ],
        ]
    )
    await message.reply_text(context.text("forget.ask"), reply_markup=keyboard)


async def confirm_forget(update: Update, context: JarchyContext) -> None:
    """Erase, or leave everything as it was."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None:
        return
    if ForgetPress.unpack(query.data).answer == "yes":  # routed only when it unpacks
        if await _holds_a_role(update, context, user.id):
            return
        await context.services.campaigns.unsubscribe(user.id, forget=True)
        await context.services.reports.forget(user.id)
        await context.services.hearings.forget(user.id)
        # The profile is gone; answer in the language the person was using a moment ago.
        key = "forget.done"
    else:
        key = "forget.kept"
    if isinstance(query.message, Message):
        await query.message.edit_text(context.text(key))
    await query.answer()


async def _holds_a_role(update: Update, context: JarchyContext, user_id: int) -> bool:
    # Erasing a coordinator would end the role without a revocation: nobody would take them out of the
    # coordinators' group, withdraw what they queued, or see it in the audit log. An admin revokes first.
    if not await context.services.gate.holds(user_id):
        return False
    await context.services.gate.refuse(user_id, "account.forget", detail="holds a role")
    if update.callback_query is not None:
        await update.callback_query.answer(context.plain("forget.has_role"), show_alert=True)
    elif update.effective_message is not None:
        await update.effective_message.reply_text(context.text("forget.has_role"))
    return True


def register(app: JarchyApp) -> None:
    """Handle /myreports and /forget."""
    app.add_handler(CommandHandler("myreports", list_my_reports, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("forget", ask_to_forget, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(confirm_forget, pattern=ForgetPress.matches))
