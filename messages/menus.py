"""Command menus and inline keyboards, built from the catalogs."""

from __future__ import annotations

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from bot.domain.callbacks import LanguagePress, MenuPress
from bot.domain.languages import LANGUAGE_NAMES, LANGUAGES
from messages.catalog import Catalogs, Safe

# Public commands, in the order the menu and /help list them; features append theirs here.
PUBLIC_COMMANDS: tuple[str, ...] = (
    "start", "report", "sos", "cases", "following", "calendar", "subscribe",
    "settings", "timezone", "myreports", "unsubscribe", "forget", "safeword", "verify", "language", "help",
)  # fmt: skip


def command_list(texts: Catalogs, language: str) -> Safe:
    """Return '/command — description' lines for /start and /help."""
    return Safe("\n".join(f"/{name} — {texts.text(language, f'command.{name}')}" for name in PUBLIC_COMMANDS))


def help_screen(
    texts: Catalogs,
    language: str,
    *,
    roles: frozenset[str] = frozenset(),
    proxy_link: str = "",
    backup: str | None = None,
) -> str:
    """Render /help: the commands, the role holders' parts, then how to stay reachable where Telegram is
    blocked (with the organisation's proxy link, if it gives one, and its backup bot)."""
    text = texts.text(language, "help.text", commands=command_list(texts, language))
    # The role only shapes the help text; every coordinator command checks it again in the database.
    if roles:
        text += "\n\n" + texts.text(language, "help.coordinators")
    if "admin" in roles:
        text += "\n\n" + texts.text(language, "help.admins")
    text += "\n\n" + texts.text(language, "help.reachable")
    if proxy_link:
        text += "\n" + texts.text(language, "help.proxy_link", link=proxy_link)
    if backup:
        text += "\n\n" + texts.text(language, "help.backup_bot", backup=backup)
    return text


def bot_commands(texts: Catalogs, language: str) -> list[BotCommand]:
    """Return the menu for setMyCommands in one language."""
    return [BotCommand(name, texts.text(language, f"command.{name}")) for name in PUBLIC_COMMANDS]


def start_menu(texts: Catalogs, language: str) -> InlineKeyboardMarkup:
    """Return the one-tap Report and SOS buttons under the welcome."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.plain(language, "menu.report"), callback_data=MenuPress("report").pack()
                ),
                InlineKeyboardButton(
                    texts.plain(language, "menu.sos"), callback_data=MenuPress("sos").pack()
                ),
            ]
        ]
    )


def language_keyboard(current: str) -> InlineKeyboardMarkup:
    """Return one button per language, the current one marked."""
    buttons = [
        InlineKeyboardButton(
            ("✓ " if code == current else "") + LANGUAGE_NAMES[code],
            callback_data=LanguagePress(code).pack(),
        )
        for code in LANGUAGES
    ]
    return InlineKeyboardMarkup([buttons[:2], buttons[2:]])
