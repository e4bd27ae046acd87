"""/bots (admins): the organisation's bots, who each can reach, the invitation to everyone, the switch."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import FleetPress
from bot.domain.errors import NotAllowed
from bot.services.access.backups import Census, UnknownBot
from handlers.start import PRIVATE_MESSAGES
from messages.fleet_screens import BotLine, bots_screen, switch_confirm


def _lines(census: Census) -> list[BotLine]:
    return [
        BotLine(b.bot.bot_id, b.username, b.bot.main, b.in_use, b.working, b.reaches, b.in_group)
        for b in census.bots
    ]


async def show_bots(update: Update, context: JarchyContext) -> None:
    """Show every bot with its state and reach, and the people no working bot can reach."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    try:
        census = await context.services.backups.census_for(user.id)
    except NotAllowed:
        await message.reply_text(context.text("coord.admin_only"))
        return
    text, keyboard = bots_screen(
        context.texts, context.language, _lines(census), census.people, census.unreachable
    )
    await message.reply_text(text, reply_markup=keyboard)


async def press(update: Update, context: JarchyContext) -> None:
    """Invite everyone, ask before a switch, or switch."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or query.data is None or user is None or chat is None:
        return
    if chat.type != "private":
        await query.answer(context.plain("coord.admin_only"), show_alert=True)
        return
    pressed = FleetPress.unpack(query.data)  # routed only when it unpacks
    backups = context.services.backups
    try:
        if pressed.action == "inv":
            queued = await backups.invite_by(user.id)
            await query.answer()
            await chat.send_message(context.text("fleet.invited", count=queued))
            return
        await context.services.gate.require(user.id, "bot.switch", str(pressed.bot), roles=("admin",))
        bot = backups.fleet.by_id(pressed.bot)
        if bot is None or not backups.fleet.working(bot.bot_id):
            raise UnknownBot(pressed.bot)
        name = backups.name_of(bot.bot_id)
        if pressed.action == "sw":
            text, keyboard = switch_confirm(context.texts, context.language, bot.bot_id, name)
            await query.answer()
            await chat.send_message(text, reply_markup=keyboard)
            return
        result = await backups.switch_by(user.id, bot.bot_id)
    except NotAllowed:
        await query.answer(context.plain("coord.admin_only"), show_alert=True)
        return
    except UnknownBot:
        await query.answer(context.plain("fleet.unknown_bot"), show_alert=True)
        return
    await query.answer()
    if not result.changed:
        await chat.send_message(context.text("fleet.already_in_use", name=name))
        return
    census = result.census
    await chat.send_message(
        context.text(
            "fleet.switched",
            name=name,
            people=result.told_people,
            channels=result.told_channels,
            unreachable=census.unreachable if census is not None else 0,
        )
    )


def register(app: JarchyApp) -> None:
    """Answer /bots in private chats, and its buttons."""
    app.add_handler(CommandHandler("bots", show_bots, filters=PRIVATE_MESSAGES))
    app.add_handler(CallbackQueryHandler(press, pattern=FleetPress.matches))
