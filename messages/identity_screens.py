"""Screens of the bot's identity: the safety word's line on sensitive screens, and /verify's answers."""

from __future__ import annotations

from collections.abc import Sequence

from messages.catalog import Catalogs


def safeword_header(texts: Catalogs, lang: str, word: str | None) -> str:
    """Return the safety word's line (and a blank line) for the top of a sensitive screen, or ""."""
    if not word:
        return ""
    return texts.text(lang, "safeword.header", word=word) + "\n\n"


def official_list(names: Sequence[str]) -> str:
    """Return the official usernames as shown in /verify's answers."""
    return ", ".join(f"@{name}" for name in names)
