"""Every user-facing text, keyed, with translations in en, ru, ky and uz (gettext catalogs)."""

from bot.domain.languages import LANGUAGES
from messages.catalog import Catalogs, Safe, catalogs

__all__ = ["LANGUAGES", "Catalogs", "Safe", "catalogs"]
