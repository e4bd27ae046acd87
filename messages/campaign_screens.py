"""Campaign messages as recipients see them, the draft card coordinators edit, and progress lines."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from bot.domain import dates
from bot.domain.callbacks import (
    CampaignAction,
    CampaignPress,
    CampaignPreviewPress,
    ComposeAction,
    ComposePress,
)
from bot.domain.languages import LANGUAGES
from messages.catalog import Catalogs
from storage.campaigns import Campaign, Reach


def campaign_message(
    texts: Catalogs,
    language: str,
    campaign: Campaign,
    zone: ZoneInfo,
    *,
    has_template: bool,
    for_channel: bool,
    bot_username: str | None,
    preview: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Return (method, params without chat_id) of the campaign as one recipient sees it.

    People act with one tap; in channels a template is fetched through a link that opens a private chat
    with the bot (a bot cannot write first to someone who never started it)."""
    body = full_text(texts, language, campaign, zone)
    family = CampaignPreviewPress if preview else CampaignPress

    def data(action: CampaignAction) -> str:
        return family(campaign.id, action).pack()

    rows: list[list[dict[str, str]]] = [[_button(texts, language, "campaign.button_acted", data("acted"))]]
    if has_template:
        if for_channel and bot_username:
            url = f"https://t.me/{bot_username}?start=tpl_{campaign.id}"
            rows.append([{"text": texts.plain(language, "campaign.button_template"), "url": url}])
        elif not for_channel:
            rows.append([_button(texts, language, "campaign.button_template", data("template"))])
    if campaign.link:
        rows.append([{"text": texts.plain(language, "campaign.button_link"), "url": campaign.link}])
    if not for_channel:
        last = []
        if campaign.deadline is not None:
            last.append(_button(texts, language, "campaign.button_remind", data("remind")))
        last.append(_button(texts, language, "campaign.button_stop", data("stop")))
        rows.append(last)
    markup = {"inline_keyboard": rows}
    if campaign.image_file_id:
        return "sendPhoto", {
            "photo": campaign.image_file_id,
            "caption": body,
            "reply_markup": markup,
        }
    return "sendMessage", {
        "text": body,
        "reply_markup": markup,
        "link_preview_options": {"is_disabled": True},
    }


def full_text(texts: Catalogs, language: str, campaign: Campaign, zone: ZoneInfo) -> str:
    """Return the title, the (already validated) HTML body and the deadline line."""
    parts = [f"<b>{html.escape(campaign.title)}</b>", campaign.body or ""]
    if campaign.deadline is not None:
        when = dates.moment(campaign.deadline, zone)
        parts.append(texts.text(language, "campaign.deadline_line", when=when))
    return "\n\n".join(parts)


def draft_card(
    texts: Catalogs,
    language: str,
    campaign: Campaign,
    templates: list[str],
    audience_size: int,
    zone: ZoneInfo,
    reach: Reach | None = None,
) -> tuple[str, dict[str, Any]]:
    """Return the draft's summary and the buttons that edit, preview, send or discard it; with `reach`
    (a campaign waiting for approval), the line the approver weighs."""
    audience = texts.plain(
        language, f"campaign.audience_{campaign.audience}", value=campaign.audience_value or ""
    )
    text = texts.text(
        language,
        "campaign.card",
        code=campaign.ref,
        title=campaign.title,
        status=texts.plain(language, f"campaign.status_{campaign.status}"),
        text=texts.plain(language, "campaign.set" if campaign.body else "campaign.unset"),
        image=texts.plain(language, "campaign.set" if campaign.image_file_id else "campaign.unset"),
        templates=", ".join(templates) or "—",
        link=campaign.link or "—",
        deadline=dates.moment(campaign.deadline, zone) if campaign.deadline else "—",
        audience=audience,
        size=audience_size,
        channels=texts.plain(language, "campaign.yes" if campaign.include_channels else "campaign.no"),
    )
    if reach is not None:
        text += "\n" + reach_line(texts, language, reach)
    if campaign.status != "draft":
        return text, {"inline_keyboard": []}
    cid = campaign.id

    def b(key: str, action: ComposeAction) -> dict[str, str]:
        return _button(texts, language, key, ComposePress(cid, action).pack())

    rows = [
        [b("campaign.edit_text", "text"), b("campaign.edit_image", "image")],
        [b("campaign.edit_template", "template"), b("campaign.edit_link", "link")],
        [b("campaign.edit_deadline", "deadline"), b("campaign.edit_audience", "audience")],
        [
            b("campaign.preview", "preview"),
            b("campaign.send_now", "send"),
            b("campaign.schedule", "schedule"),
        ],
        [b("campaign.discard", "cancel")],
    ]
    return text, {"inline_keyboard": rows}


def reach_line(texts: Catalogs, language: str, reach: Reach) -> str:
    """Return how many people the campaign reaches, and the author's window total when that is what
    needs the second pair of eyes (HTML)."""
    hours = f"{reach.window_h:g}"
    if reach.channels:
        return texts.text(
            language, "campaign.reach_channels", people=reach.people, window=reach.window, hours=hours
        )
    if reach.by_window:
        return texts.text(
            language,
            "campaign.reach_window",
            people=reach.people,
            window=reach.window,
            hours=hours,
            threshold=reach.threshold,
        )
    return texts.text(language, "campaign.reach", people=reach.people, threshold=reach.threshold)


def audience_keyboard(texts: Catalogs, language: str, campaign: Campaign) -> dict[str, Any]:
    """Return the audience choices for a draft."""
    cid = campaign.id

    def b(label: str, action: ComposeAction, choice: str = "", value: str = "") -> dict[str, str]:
        return {"text": label, "callback_data": ComposePress(cid, action, choice, value).pack()}

    plain = texts.plain
    channels = plain(
        language,
        "campaign.channels_toggle",
        state=plain(language, "campaign.yes" if campaign.include_channels else "campaign.no"),
    )
    return {
        "inline_keyboard": [
            [b(plain(language, "campaign.audience_all", value=""), "aud", "all")],
            [b(code.upper(), "aud", "language", code) for code in LANGUAGES],
            [
                b(plain(language, f"subscribe.topic_{t}"), "aud", "topic", t)
                for t in ("campaigns", "hearings", "urgent")
            ],
            [b(plain(language, "campaign.audience_case_button"), "case")],
            [b(channels, "channels")],
        ]
    }


def template_languages(texts: Catalogs, language: str, campaign: Campaign) -> dict[str, Any]:
    """Return one button per language for the template to write next."""
    return {
        "inline_keyboard": [
            [
                {"text": code.upper(), "callback_data": ComposePress(campaign.id, "tpl", code).pack()}
                for code in LANGUAGES
            ]
        ]
    }


def progress_text(
    texts: Catalogs, language: str, campaign: Campaign, counts: Mapping[str, int], actions: Mapping[str, int]
) -> str:
    """Return the author's live status line for a broadcast."""
    queued = sum(counts.get(s, 0) for s in ("pending", "sending", "held"))
    failed = counts.get("dead", 0) + counts.get("unknown", 0)
    key = "campaign.progress_done" if campaign.status in ("done", "cancelled") else "campaign.progress"
    return texts.text(
        language,
        key,
        code=campaign.ref,
        title=campaign.title,
        status=texts.plain(language, f"campaign.status_{campaign.status}"),
        queued=queued,
        sent=counts.get("sent", 0),
        failed=failed,
        blocked=counts.get("blocked", 0),
        cancelled=counts.get("cancelled", 0),
        acted=actions.get("acted", 0),
    )


def _button(texts: Catalogs, language: str, key: str, data: str) -> dict[str, str]:
    return {"text": texts.plain(language, key), "callback_data": data}
