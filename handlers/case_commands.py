"""The coordinators' commands with fields, read from their declaration (bot.services.cases.commands): the
one-liner `/hearing_add 3 | 01.12.2026 10:00 | ...`, or the command alone in the private chat for a guided
flow with buttons and a date picker. Both end in the same call (handlers.cases.execute_command)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram import InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType
from telegram.error import BadRequest
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.context import JarchyApp, JarchyContext
from bot.domain.callbacks import BadCallback, DatePress, FlowPress
from bot.domain.commands import CommandError, CommandSpec, arguments, parse_command
from bot.domain.errors import Refused
from bot.services.access.roles import NotAllowed
from bot.services.cases.commands import COMMANDS
from bot.services.cases.flows import FlowEnded, FlowScreen
from handlers.cases import execute_command, refusal_text
from handlers.workspace import in_workspace, pressed_in_workspace
from messages.command_screens import render_flow, render_refusal


def declared(spec: CommandSpec) -> Callable[[Update, JarchyContext], Coroutine[Any, Any, None]]:
    """Return the handler of a declared command."""

    async def handle(update: Update, context: JarchyContext) -> None:
        await run_declared(update, context, spec)

    handle.__name__ = handle.__qualname__ = f"run_{spec.name}"
    return handle


async def run_declared(update: Update, context: JarchyContext, spec: CommandSpec) -> None:
    """Read the one-liner from the message text (line breaks kept), or start the guided flow."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    if not await in_workspace(update, context, spec.action):
        return
    raw = arguments(message.text)
    if not raw.strip() and chat.type == ChatType.PRIVATE:
        await start_flow(update, context, spec)
        return
    try:
        values = parse_command(spec, raw)
    except CommandError as error:
        reply = await _unreadable(context, user.id, error)
    else:
        reply = await _executed(context, user.id, spec, values)
    await message.reply_text(reply)


async def start_flow(update: Update, context: JarchyContext, spec: CommandSpec) -> None:
    """Ask for the command's first field (coordinators; the gate refuses anyone else)."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    try:
        screen = await context.services.flows.begin(user.id, chat.id, spec.name)
    except NotAllowed:
        await message.reply_text(context.text("cases.refused"))
        return
    text, keyboard = _render(context, screen)
    await message.reply_text(text, reply_markup=keyboard)


async def press_flow_button(update: Update, context: JarchyContext) -> None:
    """Apply a button of a guided command: a step's choice, the picker, Back, Skip, Cancel or Save."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or user is None or chat is None:
        return
    # Flows live in the coordinator's own chat; a button forged onto another chat changes nothing.
    if not await pressed_in_workspace(update, context, "flow.press", private_only=True):
        return
    try:
        data: FlowPress | DatePress = (
            FlowPress.unpack(query.data) if FlowPress.matches(query.data) else DatePress.unpack(query.data)
        )
    except BadCallback:
        await query.answer(context.plain("flow.stale"), show_alert=True)
        return
    flows = context.services.flows
    message = query.message if isinstance(query.message, Message) else None
    try:
        if isinstance(data, FlowPress) and data.action == "cancel":
            await flows.cancel(user.id, data.nonce, data.step)
            await _show(context, message, chat.id, context.text("flow.cancelled"), None)
        elif isinstance(data, FlowPress) and data.action == "save":
            await _save(update, context, data, message)
        else:
            screen = await flows.press(user.id, data)
            await _show(context, message, chat.id, *_render(context, screen))
    except (FlowEnded, NotAllowed):
        # Someone else's flow, an ended one, an older step, or a role lost meanwhile (the gate audited it).
        await query.answer(context.plain("flow.stale"), show_alert=True)
        return
    await query.answer()


async def route_flow_input(update: Update, context: JarchyContext) -> bool:
    """Give typed text to the guided command waiting for it; False when none waits."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return False
    try:
        screen = await context.services.flows.input_text(user.id, message.text, message.message_id)
    except (FlowEnded, NotAllowed):
        return False
    if screen is None:
        return False
    text, keyboard = _render(context, screen)
    await message.reply_text(text, reply_markup=keyboard)
    return True


async def _save(update: Update, context: JarchyContext, data: FlowPress, message: Message | None) -> None:
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return

    ran: list[CommandSpec] = []

    async def execute(spec: CommandSpec, values: dict[str, object]) -> str:
        ran.append(spec)
        return await execute_command(context, user.id, spec, values)

    try:
        reply = await context.services.flows.save(user.id, data.nonce, data.step, execute)
    except CommandError as error:
        await chat.send_message(render_refusal(context.texts, context.language, error))
        return
    except Refused as refused:
        # The summary stays, with its buttons: Back to the field, or Cancel.
        text = refusal_text(context, ran[0], refused) if ran else context.text(refused.key, **refused.params)
        await chat.send_message(text)
        return
    await _show(context, message, chat.id, reply, None)


async def _unreadable(context: JarchyContext, user_id: int, error: CommandError) -> str:
    # Arguments that never reached the service are refused through it all the same: the role first, so a
    # stranger learns no syntax, and audited like the service's own refusals (under the case or hearing).
    first = error.spec.fields[0]
    number = error.parsed.get(first.name) if first.kind in ("case", "hearing") else None
    target = f"#{number}" if isinstance(number, int) else None
    try:
        await context.services.hearings.refuse(user_id, error.spec.action, error.key, target)
    except NotAllowed:
        return context.text("cases.refused")
    except Refused:
        pass
    return render_refusal(context.texts, context.language, error)


async def _executed(
    context: JarchyContext, user_id: int, spec: CommandSpec, values: dict[str, object]
) -> str:
    try:
        return await execute_command(context, user_id, spec, values)
    except NotAllowed:
        return context.text("cases.refused")
    except Refused as refused:
        return refusal_text(context, spec, refused)


def _render(context: JarchyContext, screen: FlowScreen) -> tuple[str, InlineKeyboardMarkup]:
    return render_flow(
        context.texts,
        context.language,
        screen.flow,
        screen.today,
        context.bot_data.settings.timezone,
        screen.error,
        screen.cases,
        screen.hearings,
    )


async def _show(
    context: JarchyContext,
    message: Message | None,
    chat_id: int,
    text: str,
    keyboard: InlineKeyboardMarkup | None,
) -> None:
    """Edit the pressed message into the next step; send it anew if Telegram will not edit it."""
    if message is not None:
        try:
            await message.edit_text(text, reply_markup=keyboard)
            return
        except BadRequest as error:
            if "not modified" in str(error).lower():
                return
    await context.bot.send_message(chat_id, text, reply_markup=keyboard)


def register(app: JarchyApp) -> None:
    """Handle the declared commands and their flows' buttons (typed input: handlers.reports.route_input)."""
    for spec in COMMANDS.values():
        app.add_handler(CommandHandler(spec.name, declared(spec)))
    app.add_handler(CallbackQueryHandler(press_flow_button, pattern=FlowPress.matches))
    app.add_handler(CallbackQueryHandler(press_flow_button, pattern=DatePress.matches))
