"""The languages jarchy speaks: one list, in the order menus and keyboards show them."""

from __future__ import annotations

# Codes are the two-letter ISO 639-1 codes Telegram reports as a person's language_code (its base part).
LANGUAGES: tuple[str, ...] = ("en", "ru", "ky", "uz")

# Each language is named in itself, so a person who cannot read the current one still finds theirs.
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "ru": "Русский", "ky": "Кыргызча", "uz": "Oʻzbekcha"}
