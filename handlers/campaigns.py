"""Campaigns: composing (/campaign_new and the draft card), approval, cancelling, progress and the
ledger for coordinators; the one-tap actions for everyone who receives one."""

from __future__ import annotations

import contextlib
import io
from typing import Any

from telegram import (
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    Message,
    MessageOriginChannel,
    Update,
)
from telegram.error import TelegramError
from telegram.ext import (
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import JarchyApp, JarchyContext
from bot.domain import dates
from bot.domain.callbacks import ApprovePress, CampaignPress, CampaignPreviewPress, ComposePress, any_of
from bot.services.access.roles import NotAllowed
from bot.services.campaigns.compose import Input
from handlers.start import PRIVATE_MESSAGES
from handlers.workspace import WorkspaceError, in_workspace, pressed_in_workspace, refusal
from messages.campaign_screens import (
    audience_keyboard,
    campaign_message,
    draft_card,
    progress_text,
    reach_line,
    template_languages,
)

# Ahead of the reporter's answers (-2) and the report form (-1): a coordinator filling in a draft.
INPUT_GROUP = -3
_TEMPLATE_LINK = PRIVATE_MESSAGES & filters.Regex(r"^/start(@\w+)? tpl_\d{1,9}$")
_FORMATTING = frozenset(
    {"bold", "italic", "underline", "strikethrough", "spoiler", "code", "pre", "text_link", "blockquote",
     "expandable_blockquote", "custom_emoji"}
)  # fmt: skip
_PROMPTS = {
    "text": "campaign.ask_text",
    "image": "campaign.ask_image",
    "link": "campaign.ask_link",
    "deadline": "campaign.ask_deadline",
    "schedule": "campaign.ask_schedule",
    "case": "campaign.ask_case",
}


async def new_campaign(update: Update, context: JarchyContext) -> None:
    """/campaign_new Title: start a draft and show its card."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if (
        message is None
        or user is None
        or chat is None
        or not await in_workspace(update, context, "campaign.new")
    ):
        return
    title = (message.text or "").partition(" ")[2]
    try:
        campaign = await context.services.campaigns.create(user.id, chat.id, title)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    await _show_card(context, chat.id, user.id, campaign.id)


async def list_campaigns(update: Update, context: JarchyContext) -> None:
    """/campaigns: the newest campaigns and their states."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "campaign.list"):
        return
    try:
        recent = await context.services.campaigns.recent(user.id)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        return
    if not recent:
        await message.reply_text(context.text("campaign.none"))
        return
    lines = [
        context.text(
            "campaign.line",
            code=c.ref,
            title=c.title,
            status=context.texts.plain(context.language, f"campaign.status_{c.status}"),
        )
        for c in recent
    ]
    await message.reply_text("\n".join(lines))


async def show_campaign(update: Update, context: JarchyContext) -> None:
    """/campaign N: the card of a draft, or the summary of a sent campaign."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if (
        message is None
        or user is None
        or chat is None
        or not await in_workspace(update, context, "campaign.view")
    ):
        return
    campaign_id = await _campaign_id_or_usage(message, context)
    if campaign_id is not None:
        await _show_card(context, chat.id, user.id, campaign_id)


async def cancel_campaign(update: Update, context: JarchyContext) -> None:
    """/campaign_cancel N: cancel a draft, a scheduled or a running broadcast."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not await in_workspace(update, context, "campaign.cancel"):
        return
    campaign_id = await _campaign_id_or_usage(message, context)
    if campaign_id is not None:
        # Rendered plain (it doubles as a callback answer): shown as it is, not as HTML.
        await message.reply_text(await _cancel(context, user.id, campaign_id), parse_mode=None)


async def approve_campaign(update: Update, context: JarchyContext) -> None:
    """/campaign_approve N, or the Approve button: the second pair of eyes."""
    message, user, query = update.effective_message, update.effective_user, update.callback_query
    if message is None or user is None:
        return
    if query is None and not await in_workspace(update, context, "campaign.approve"):
        return
    # The button is issued in the coordinators' chat, and its answer is an alert only the presser sees.
    if query is not None and not await pressed_in_workspace(update, context, "campaign.approve"):
        return
    # The button is routed only when its data unpacks.
    campaign_id = (
        ApprovePress.unpack(query.data).campaign if query is not None else _campaign_id(context.args)
    )
    if campaign_id is None:
        await message.reply_text(context.text("campaign.usage_id"))
        return
    try:
        campaign, reach = await context.services.campaigns.approve(user.id, campaign_id)
    except WorkspaceError as error:
        if query is not None:
            await query.answer(refusal(context, error, plain=True), show_alert=True)
        else:
            await message.reply_text(refusal(context, error))
        return
    if query is not None:
        # The card above the button showed the reach; an alert holds 200 characters at most.
        await query.answer(context.plain("campaign.approved", code=campaign.ref), show_alert=True)
    else:
        text = context.text("campaign.approved", code=campaign.ref)
        await message.reply_text(text + "\n" + reach_line(context.texts, context.language, reach))


async def press_compose(update: Update, context: JarchyContext) -> None:
    """A button on a draft card: cc:ID:FIELD, cc:ID:tpl:LANG, cc:ID:aud:KIND[:VALUE], preview, send…"""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or user is None or chat is None or query.data is None:
        return
    # Prompts, cards, previews and the ledger are posted where the button is pressed: forged onto a message
    # in any other chat, the press would show a draft there.
    if not await pressed_in_workspace(update, context, "campaign.button", private_only=True):
        return
    press = ComposePress.unpack(query.data)  # routed only when it unpacks
    campaign_id, action = press.campaign, press.action
    campaigns = context.services.campaigns
    try:
        if action in _PROMPTS:
            await campaigns.expect(user.id, campaign_id, action)
            await query.answer()
            await chat.send_message(context.text(_PROMPTS[action]))
        elif action == "template":
            campaign = (await campaigns.view(user.id, campaign_id)).campaign
            await query.answer()
            markup = template_languages(context.texts, context.language, campaign)
            await chat.send_message(
                context.text("campaign.ask_template_language"),
                reply_markup=InlineKeyboardMarkup.de_json(markup, context.bot),
            )
        elif action == "tpl":
            await campaigns.expect(user.id, campaign_id, "template", press.choice)
            await query.answer()
            await chat.send_message(context.text("campaign.ask_template", language=press.choice.upper()))
        elif action == "audience":
            campaign = (await campaigns.view(user.id, campaign_id)).campaign
            await query.answer()
            markup = audience_keyboard(context.texts, context.language, campaign)
            await chat.send_message(
                context.text("campaign.ask_audience"),
                reply_markup=InlineKeyboardMarkup.de_json(markup, context.bot),
            )
        elif action == "aud":
            await campaigns.set_audience(user.id, campaign_id, press.choice, press.value or None)
            await query.answer(context.plain("campaign.saved"))
            await _show_card(context, chat.id, user.id, campaign_id)
        elif action == "channels":
            await campaigns.toggle_channels(user.id, campaign_id)
            await query.answer(context.plain("campaign.saved"))
            await _show_card(context, chat.id, user.id, campaign_id)
        elif action == "preview":
            campaign, templates = await campaigns.for_preview(user.id, campaign_id)
            await query.answer()
            method, params = campaign_message(
                context.texts,
                context.language,
                campaign,
                context.bot_data.settings.timezone,
                has_template=bool(templates),
                for_channel=False,
                bot_username=context.bot.username,
                preview=True,
            )
            try:
                await _send_raw(context, chat.id, method, params)
            except TelegramError:
                await chat.send_message(context.text("campaign.preview_failed"))
        elif action == "send":
            await query.answer()
            await _send(context, chat.id, user.id, campaign_id)
        elif action == "cancel":
            await query.answer()
            await chat.send_message(await _cancel(context, user.id, campaign_id), parse_mode=None)  # plain
        elif action == "ledger":
            if chat.type != "private":
                # Pseudonymous, but still who-got-what: not for a group's history.
                await query.answer(context.plain("campaign.ledger_private"), show_alert=True)
                return
            await query.answer()
            buffer = io.StringIO()
            rows = await campaigns.ledger(user.id, campaign_id, buffer)
            await chat.send_document(
                InputFile(buffer.getvalue().encode(), filename=f"C-{campaign_id}-ledger.csv"),
                caption=context.text("campaign.ledger_caption", code=f"C-{campaign_id}", rows=rows),
            )
        else:
            await query.answer(context.plain("callback.stale"))
    except WorkspaceError as error:
        await query.answer(refusal(context, error, plain=True), show_alert=True)


async def fill_pending(update: Update, context: JarchyContext) -> None:
    """A coordinator's message that answers a draft's pending field."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    # Only people holding a role can have a pending field; everyone else goes straight on.
    if context.profile is None or not context.profile.roles:
        return
    campaigns = context.services.campaigns
    pending = await campaigns.pending(user.id)
    if pending is None:
        return
    # Telegram's own formatting becomes HTML; typed tags next to a link or #tag Telegram detected stay tags.
    formatted = any(entity.type in _FORMATTING for entity in message.entities)
    value = Input(
        text=message.text,
        html=message.text_html if message.text and formatted else None,
        photo_file_id=message.photo[-1].file_id if message.photo else None,
        other=not message.text and not message.photo,
    )
    try:
        campaign = await campaigns.fill(user.id, value)
    except WorkspaceError as error:
        await message.reply_text(refusal(context, error))
        raise ApplicationHandlerStop from None
    if campaign is None:
        return  # the draft was sent or cancelled meanwhile: the message is for whoever else wants it
    if pending.field == "schedule" and campaign.send_at is not None:
        await _send(context, chat.id, user.id, campaign.id, campaign.send_at)
    else:
        await _show_card(context, chat.id, user.id, campaign.id)
    raise ApplicationHandlerStop


async def press_action(update: Update, context: JarchyContext) -> None:
    """A recipient's button: I took action, the letter template, remind me, stop these messages."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None or query.data is None:
        return
    if CampaignPreviewPress.matches(query.data):
        await query.answer(context.plain("campaign.preview_button"), show_alert=True)
        return
    press = CampaignPress.unpack(query.data)  # routed only when it unpacks
    await _act(update, context, user.id, press.campaign, press.action)


async def template_by_link(update: Update, context: JarchyContext) -> None:
    """/start tpl_N, from the "Get the letter" link on a channel post."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    await _act(update, context, user.id, int(message.text.rsplit("_", 1)[1]), "template")


async def register_forwarded_channel(update: Update, context: JarchyContext) -> None:
    """An admin forwards a post from a channel: campaigns and announcements will be posted there."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    origin = message.forward_origin
    if (
        not isinstance(origin, MessageOriginChannel)
        or context.profile is None
        or "admin" not in context.profile.roles
    ):
        # A forwarded post from anyone else is just a message (this handler took it, so answer here).
        await message.reply_text(context.text("fallback.not_understood"))
        return
    channel = origin.chat
    try:
        member = await context.bot.get_chat_member(channel.id, context.bot.id)
    except TelegramError:
        member = None
    if member is None or member.status not in ("administrator", "creator"):
        await message.reply_text(context.text("channel.unreachable"))
        raise ApplicationHandlerStop
    try:
        added = await context.services.hearings.register_channel(user.id, channel.id)
    except NotAllowed:
        # The gate audited it already.
        await message.reply_text(context.text("channel.refused"))
        raise ApplicationHandlerStop from None
    await message.reply_text(context.text("channel.done" if added else "channel.already"))
    raise ApplicationHandlerStop


# ------------------------------------------------------------------------------------- glue


async def _act(update: Update, context: JarchyContext, user_id: int, campaign_id: int, action: str) -> None:
    query, chat = update.callback_query, update.effective_chat
    # From a channel post the person's private chat is their user id (if they ever started the bot).
    private_chat = chat.id if chat is not None and chat.type == "private" else user_id
    try:
        key, campaign, template = await context.services.campaigns.act(
            user_id, private_chat, campaign_id, action
        )
    except WorkspaceError as error:
        text = refusal(context, error, plain=True)
        key, template = "", None
    else:
        text = context.texts.plain(context.language, key, title=campaign.title, code=campaign.ref)
    if template is not None:
        try:
            # A template is the author's plain text, to copy as it is: "<" and "&" in it are letters.
            await context.bot.send_message(private_chat, template, parse_mode=None)
        except TelegramError:
            # They never started the bot (a channel reader): the link opens the chat and sends it there.
            if query is not None and context.bot.username:
                await query.answer(url=f"https://t.me/{context.bot.username}?start=tpl_{campaign_id}")
                return
    if query is not None:
        await query.answer(text, show_alert=action != "acted" or key != "campaign.acted")
    elif update.effective_message is not None:
        await update.effective_message.reply_text(text, parse_mode=None)  # rendered plain, as the answer


async def _send(
    context: JarchyContext, chat_id: int, user_id: int, campaign_id: int, when: Any = None
) -> None:
    campaigns = context.services.campaigns
    try:
        campaign = await campaigns.send(user_id, campaign_id, when)
    except WorkspaceError as error:
        await context.bot.send_message(chat_id, refusal(context, error))
        return
    zone = context.bot_data.settings.timezone
    if campaign.status == "awaiting_approval":
        text = context.text("campaign.awaiting_approval", code=campaign.ref)
        with contextlib.suppress(*WorkspaceError):  # the status message matters more than the figures
            reach = (await campaigns.view(user_id, campaign.id)).reach
            if reach is not None:
                text += "\n" + reach_line(context.texts, context.language, reach)
    elif when is not None and campaign.send_at is not None:
        text = context.text(
            "campaign.scheduled",
            code=campaign.ref,
            when=dates.moment(campaign.send_at, zone),
        )
    else:
        text = progress_text(context.texts, context.language, campaign, {}, {})
    sent = await context.bot.send_message(chat_id, text)
    await campaigns.set_progress_message(campaign.id, sent.message_id)
    if campaign.status == "awaiting_approval":
        await _ask_for_approval(context, user_id, campaign.id)


async def _ask_for_approval(context: JarchyContext, user_id: int, campaign_id: int) -> None:
    services = context.services
    async with services.db.read() as conn:
        target = await services.alerts.coordinator_chat(conn)
    if target is None:
        return  # the author was told to ask a colleague for /campaign_approve
    summary = await services.campaigns.view(user_id, campaign_id)
    text, _ = draft_card(
        context.texts,
        context.language,
        summary.campaign,
        summary.templates,
        summary.audience_size,
        context.bot_data.settings.timezone,
        summary.reach,
    )
    button = {
        "text": context.texts.plain(context.language, "campaign.approve_button"),
        "callback_data": ApprovePress(campaign_id, "approve").pack(),
    }
    # The approvers see exactly what would go out, then the card with the Approve button.
    campaign, templates = await services.campaigns.for_preview(user_id, campaign_id)
    method, params = campaign_message(
        context.texts,
        services.settings.default_language,
        campaign,
        context.bot_data.settings.timezone,
        has_template=bool(templates),
        for_channel=False,
        bot_username=context.bot.username,
        preview=True,
    )
    with contextlib.suppress(TelegramError):  # the card below still says what it is
        await _send_raw(context, target, method, params)
    await context.bot.send_message(
        target,
        context.text("campaign.approval_request") + "\n\n" + text,
        reply_markup=InlineKeyboardMarkup.de_json({"inline_keyboard": [[button]]}, context.bot),
    )


async def _cancel(context: JarchyContext, user_id: int, campaign_id: int) -> str:
    try:
        campaign, withdrawn = await context.services.campaigns.cancel(user_id, campaign_id)
    except WorkspaceError as error:
        return refusal(context, error, plain=True)
    await context.services.broadcaster.show_progress(campaign)
    return context.texts.plain(context.language, "campaign.cancelled", code=campaign.ref, withdrawn=withdrawn)


async def _show_card(context: JarchyContext, chat_id: int, user_id: int, campaign_id: int) -> None:
    try:
        summary = await context.services.campaigns.view(user_id, campaign_id)
    except WorkspaceError as error:
        await context.bot.send_message(chat_id, refusal(context, error))
        return
    zone = context.bot_data.settings.timezone
    text, markup = draft_card(
        context.texts,
        context.language,
        summary.campaign,
        summary.templates,
        summary.audience_size,
        zone,
        summary.reach,
    )
    if summary.campaign.status != "draft":
        text += "\n\n" + progress_text(
            context.texts, context.language, summary.campaign, summary.deliveries, summary.actions
        )
        rows = [
            [
                {
                    "text": context.texts.plain(context.language, "campaign.ledger"),
                    "callback_data": ComposePress(campaign_id, "ledger").pack(),
                }
            ]
        ]
        if summary.campaign.status in ("awaiting_approval", "scheduled", "sending", "sent"):
            rows.append(
                [
                    {
                        "text": context.texts.plain(context.language, "campaign.cancel_button"),
                        "callback_data": ComposePress(campaign_id, "cancel").pack(),
                    }
                ]
            )
        markup = {"inline_keyboard": rows}
    await context.bot.send_message(
        chat_id,
        text,
        reply_markup=InlineKeyboardMarkup.de_json(markup, context.bot),
    )


async def _send_raw(context: JarchyContext, chat_id: int, method: str, params: dict[str, Any]) -> Message:
    markup = InlineKeyboardMarkup.de_json(params["reply_markup"], context.bot)
    if method == "sendPhoto":
        return await context.bot.send_photo(
            chat_id,
            params["photo"],
            caption=params["caption"],
            reply_markup=markup,
        )
    return await context.bot.send_message(
        chat_id,
        params["text"],
        reply_markup=markup,
        link_preview_options=LinkPreviewOptions(is_disabled=True),
    )


async def _campaign_id_or_usage(message: Message, context: JarchyContext) -> int | None:
    """Return the campaign number typed after the command, or say how to type it."""
    campaign_id = _campaign_id(context.args)
    if campaign_id is None:
        await message.reply_text(context.text("campaign.usage_id"))
    return campaign_id


def _campaign_id(args: list[str] | None) -> int | None:
    if not args:
        return None
    raw = args[0].strip().upper().removeprefix("C-").removeprefix("C").lstrip("#")
    return int(raw) if raw.isdigit() and len(raw) < 10 else None


def register(app: JarchyApp) -> None:
    """Handle the campaign commands, buttons, pending input and forwarded channel posts."""
    app.add_handler(CommandHandler("start", template_by_link, filters=_TEMPLATE_LINK))
    app.add_handler(CommandHandler("campaign_new", new_campaign))
    app.add_handler(CommandHandler("campaigns", list_campaigns))
    app.add_handler(CommandHandler("campaign", show_campaign))
    app.add_handler(CommandHandler("campaign_cancel", cancel_campaign))
    app.add_handler(CommandHandler("campaign_approve", approve_campaign))
    app.add_handler(CallbackQueryHandler(press_compose, pattern=ComposePress.matches))
    app.add_handler(CallbackQueryHandler(approve_campaign, pattern=ApprovePress.matches))
    app.add_handler(CallbackQueryHandler(press_action, pattern=any_of(CampaignPress, CampaignPreviewPress)))
    app.add_handler(
        MessageHandler(
            filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE & ~filters.COMMAND, fill_pending
        ),
        group=INPUT_GROUP,
    )
    app.add_handler(MessageHandler(PRIVATE_MESSAGES & filters.FORWARDED, register_forwarded_channel))
