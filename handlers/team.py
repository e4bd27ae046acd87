"""The team: /invite (admins), joining by invite link, /name, /team, /revoke (admins)."""

from __future__ import annotations

import contextlib

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import JarchyApp, JarchyContext
from bot.domain import dates
from bot.domain.callbacks import InvitePress, TeamPress
from bot.domain.errors import NotAllowed
from bot.services.access.team import INVITE_PREFIX
from handlers.start import PRIVATE_MESSAGES
from handlers.workspace import WorkspaceError, in_workspace, pressed_in_workspace, refusal
from handlers.workspace_screens import team_list

_JOIN = PRIVATE_MESSAGES & filters.Regex(rf"^/start(@\w+)? {INVITE_PREFIX}")


async def create_invite(update: Update, context: JarchyContext) -> None:
    """Create a single-use invite link (admins only, in private)."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    try:
        invite = await context.services.team.invite(user.id)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    link = f"https://t.me/{context.bot.username}?start={INVITE_PREFIX}{invite.token}"
    expires = dates.moment(invite.expires_at, context.bot_data.settings.timezone)
    withdraw = InlineKeyboardButton(
        context.texts.plain(context.language, "team.withdraw_button"),
        callback_data=InvitePress("x", invite.id).pack(),
    )
    await message.reply_text(
        context.text("team.invite_created", link=link, expires=expires),
        reply_markup=InlineKeyboardMarkup([[withdraw]]),
        disable_web_page_preview=True,
    )


async def withdraw_invite(update: Update, context: JarchyContext) -> None:
    """Withdraw an unused invite from its button."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None or query.data is None:
        return
    # Invites are made in private: their buttons work only there.
    if not await pressed_in_workspace(update, context, "team.withdraw", private_only=True):
        return
    invite_id = InvitePress.unpack(query.data).invite  # routed only when it unpacks
    try:
        done = await context.services.team.withdraw(user.id, invite_id)
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)
        return
    await query.answer(context.plain("team.withdrawn" if done else "team.invite_used"), show_alert=True)
    if done and query.message is not None:
        await query.edit_message_reply_markup(reply_markup=None)


async def join_team(update: Update, context: JarchyContext) -> None:
    """Use an invite link: become a coordinator, then choose the name colleagues will see."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    token = message.text.split(maxsplit=1)[1].removeprefix(INVITE_PREFIX).strip()
    try:
        await context.services.team.join(user.id, token)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_text(context.text("team.joined"))


async def set_name(update: Update, context: JarchyContext) -> None:
    """Set the display name colleagues see on cards and in /team."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "team.name"):
        return
    try:
        name = await context.services.team.set_name(user.id, " ".join(context.args or []))
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await message.reply_text(context.text("team.name_set", name=name))


async def show_team(update: Update, context: JarchyContext) -> None:
    """List coordinators and admins by display name; admins get a Revoke button for each coordinator."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "team.list"):
        return
    try:
        members = await context.services.team.members(user.id)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    is_admin = context.profile is not None and "admin" in context.profile.roles
    text, keyboard = team_list(
        context.texts, context.language, members, context.bot_data.settings.timezone, with_buttons=is_admin
    )
    await message.reply_text(text, reply_markup=keyboard)


async def confirm_revoke(update: Update, context: JarchyContext) -> None:
    """Ask before revoking from a /team button: a mis-tap must not remove a colleague."""
    query, user = update.callback_query, update.effective_user
    if query is None or query.data is None or user is None:
        return
    # The question is posted where the button is pressed: only where /team is shown.
    if not await pressed_in_workspace(update, context, "team.revoke"):
        return
    ref = TeamPress.unpack(query.data).member  # routed only when it unpacks
    try:
        await context.services.gate.require(user.id, "team.revoke", roles=("admin",))
    except NotAllowed:
        await query.answer(context.plain("coord.admin_only"), show_alert=True)
        return
    button = InlineKeyboardButton(
        context.texts.plain(context.language, "team.revoke_confirm_button"),
        callback_data=TeamPress("rvy", ref).pack(),
    )
    await query.answer()
    if update.effective_chat is not None:
        await update.effective_chat.send_message(
            context.text("team.revoke_confirm", ref=ref), reply_markup=InlineKeyboardMarkup([[button]])
        )


async def revoke(update: Update, context: JarchyContext) -> None:
    """Take the coordinator role from someone: /revoke NAME, or the button under /team."""
    message, user, query = update.effective_message, update.effective_user, update.callback_query
    if message is None or user is None:
        return
    if query is not None:
        if not await pressed_in_workspace(update, context, "team.revoke"):
            return
        who = TeamPress.unpack(query.data).member  # routed only when it unpacks
    else:
        if not await in_workspace(update, context, "team.revoke"):
            return
        who = " ".join(context.args or [])
        if not who.strip():
            await message.reply_text(context.text("team.revoke_usage"))
            return
    try:
        name, freed = await context.services.team.revoke(user.id, who)
    except WorkspaceError as error:
        text = refusal(context, error, plain=query is not None)
        if query is not None:
            await query.answer(text, show_alert=True)
        else:
            await message.reply_text(text)
        return
    # Rendered plain, as the answer it may also be: a name is shown as it is, "<" and "&" included.
    done = context.texts.plain(context.language, "team.revoked", name=name or who, freed=freed)
    if query is not None:
        # An alert holds 200 characters: the whole answer replaces the confirmation instead.
        await query.answer(context.texts.plain(context.language, "team.revoked_short", name=name or who))
        with contextlib.suppress(BadRequest):
            await message.edit_text(done, parse_mode=None)
    else:
        await message.reply_text(done, parse_mode=None)


def register(app: JarchyApp) -> None:
    """Handle the team commands; the invite link's /start comes before the plain /start."""
    app.add_handler(CommandHandler("start", join_team, filters=_JOIN))
    app.add_handler(CommandHandler("invite", create_invite, filters=PRIVATE_MESSAGES))
    app.add_handler(CommandHandler("name", set_name))
    app.add_handler(CommandHandler("team", show_team))
    app.add_handler(CommandHandler("revoke", revoke))
    app.add_handler(CallbackQueryHandler(withdraw_invite, pattern=InvitePress.matches))
    app.add_handler(CallbackQueryHandler(confirm_revoke, pattern=TeamPress.where(step="rv")))
    app.add_handler(CallbackQueryHandler(revoke, pattern=TeamPress.where(step="rvy")))
