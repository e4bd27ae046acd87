"""Screens of the backup bots: /bots for admins (which bot reaches how many people) and its buttons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.domain.callbacks import FleetPress
from messages.catalog import Catalogs


@dataclass(frozen=True)
class BotLine:
    """One bot as /bots shows it."""

    bot_id: int
    username: str | None
    main: bool
    in_use: bool
    working: bool
    reaches: int
    in_group: bool | None = None


def bots_screen(
    texts: Catalogs, lang: str, bots: Sequence[BotLine], people: int, unreachable: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    """Return /bots: each bot, its state and reach, who no working bot reaches, and the buttons."""
    lines = [texts.text(lang, "fleet.title")]
    for bot in bots:
        name = f"@{bot.username}" if bot.username else str(bot.bot_id)
        role = texts.plain(lang, "fleet.role_main" if bot.main else "fleet.role_backup")
        state = texts.plain(lang, "fleet.in_use" if bot.in_use else "fleet.standby")
        health = texts.plain(lang, "fleet.answers" if bot.working else "fleet.refused")
        lines.append(
            texts.text(
                lang, "fleet.line", name=name, role=role, state=state, health=health, reaches=bot.reaches
            )
        )
        if bot.in_group is False:
            lines.append(texts.text(lang, "fleet.not_in_group"))
    lines.append("")
    lines.append(texts.text(lang, "fleet.unreachable", unreachable=unreachable, people=people))
    buttons: list[list[InlineKeyboardButton]] = []
    standby = [b for b in bots if not b.in_use and b.working]
    invite_to = next((b for b in standby if b.username and not b.main), None)
    if invite_to is not None:
        buttons.append(
            [
                InlineKeyboardButton(
                    texts.plain(lang, "fleet.invite_button", backup=invite_to.username),
                    callback_data=FleetPress("inv", invite_to.bot_id).pack(),
                )
            ]
        )
    for bot in standby:
        name = f"@{bot.username}" if bot.username else str(bot.bot_id)
        buttons.append(
            [
                InlineKeyboardButton(
                    texts.plain(lang, "fleet.switch_button", name=name),
                    callback_data=FleetPress("sw", bot.bot_id).pack(),
                )
            ]
        )
    if not any(not b.main for b in bots):
        lines.append("")
        lines.append(texts.text(lang, "fleet.none_configured"))
    return "\n".join(lines), InlineKeyboardMarkup(buttons) if buttons else None


def switch_confirm(texts: Catalogs, lang: str, bot_id: int, name: str) -> tuple[str, InlineKeyboardMarkup]:
    """Return the question before a switch, with its one confirming button."""
    button = InlineKeyboardButton(
        texts.plain(lang, "fleet.switch_confirm_button", name=name),
        callback_data=FleetPress("swy", bot_id).pack(),
    )
    return texts.text(lang, "fleet.switch_confirm", name=name), InlineKeyboardMarkup([[button]])
