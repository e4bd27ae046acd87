"""Rules of the bot's identity: what makes a safety word, and what is a Telegram bot username."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from bot.domain.errors import BadInput
from bot.domain.report_form import telegram_length

SAFEWORD_MIN = 2
SAFEWORD_MAX = 32  # as Telegram counts it: a short word or phrase fits the top of any screen
CLEAR_SAFEWORD = "-"  # `/safeword -` removes it (a word of its own would collide with somebody's choice)

# Shaped like a report code (R-XXXXX, K-XXXXX): on top of a question it would be read as the question's code.
_CODE_LIKE = re.compile(r"\b[RK]-[A-Z0-9]{5}\b")
# Telegram usernames: 5 to 32 letters, digits and underscores, starting with a letter.
_USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{4,31}")


class BadSafeword(BadInput, ValueError):
    """A safety word that cannot be used as it is; `key` names the polite answer."""


class BadUsername(BadInput, ValueError):
    """Something that is not a Telegram username."""

    def __init__(self) -> None:
        super().__init__("verify.malformed")


def normalise_safeword(raw: str) -> str:
    """Return the safety word as stored and shown: NFC, one line, inner spaces collapsed.

    NFC, not NFKC: the person sees the letters they typed, and the same word typed on another keyboard
    (composed or decomposed accents) is stored the same way."""
    text = unicodedata.normalize("NFC", raw)
    if any(ch in "\r\n\u2028\u2029" for ch in text.strip()):
        raise BadSafeword("safeword.one_line")
    # Control, format and private-use characters would hide or fake what is shown (a right-to-left mark).
    # The zero-width joiner stays: emoji such as 👩‍⚕️ are made with it.
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Cn") for ch in text if ch not in "\t\u200d"):
        raise BadSafeword("safeword.one_line")
    word = " ".join(text.split())
    if _CODE_LIKE.search(word):
        raise BadSafeword("safeword.one_line")
    if telegram_length(word) < SAFEWORD_MIN:
        raise BadSafeword("safeword.too_short", limit=SAFEWORD_MIN)
    if telegram_length(word) > SAFEWORD_MAX:
        raise BadSafeword("safeword.too_long", limit=SAFEWORD_MAX)
    return word


def bot_id_of(token: str) -> int:
    """Return a bot's own user id: the number before the colon of its token (0 for no token)."""
    head = token.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def bot_username(raw: str) -> str:
    """Return a username as written without @ and in lower case (Telegram ignores case); or BadUsername.

    A t.me link is accepted too: that is how a clone is most often passed around."""
    text = raw.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    for prefix in ("t.me/", "telegram.me/"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :].split("?")[0].rstrip("/")
    text = text.removeprefix("@")
    if not _USERNAME.fullmatch(text):
        raise BadUsername
    return text.lower()


def official_usernames(own: str | None, listed: Iterable[str]) -> tuple[str, ...]:
    """Return the official usernames, lower case, without @: the running bot's own first, then the listed."""
    names: list[str] = []
    for name in (own, *listed):
        if not name:
            continue
        try:
            clean = bot_username(name)
        except BadUsername:
            continue
        if clean not in names:
            names.append(clean)
    return tuple(names)
