"""Every user-facing text, keyed, with translations in en, ru, ky and uz (gettext catalogs)."""

from messages.catalog import LANGUAGES, Catalogs, Safe, catalogs

__all__ = ["LANGUAGES", "Catalogs", "Safe", "catalogs"]
