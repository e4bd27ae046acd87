"""Load the gettext catalogs and render keyed texts with escaped placeholders."""

from __future__ import annotations

import gettext
import html
import io
import string
from functools import cache
from pathlib import Path

from bot.domain.languages import LANGUAGES

DOMAIN = "messages"
LOCALE_DIR = Path(__file__).parent / "locale"


class Safe(str):
    """Text that is already valid Telegram HTML and must not be escaped again."""

    __slots__ = ()


class MissingText(KeyError):
    """A key has no text in the catalog: a bug caught by tests/test_catalogs.py."""


class Catalogs:
    """Keyed texts in every language; English fills in nothing: a missing key is an error."""

    def __init__(
        self, translations: dict[str, gettext.NullTranslations], default_language: str = "en"
    ) -> None:
        self._translations = translations
        self.default_language = default_language

    @classmethod
    def load(cls, locale_dir: Path = LOCALE_DIR, default_language: str = "en") -> Catalogs:
        """Load compiled .mo files, compiling a .po in memory where the build has not."""
        return cls({lang: _load_language(locale_dir, lang) for lang in LANGUAGES}, default_language)

    def language(self, code: str | None) -> str:
        """Return the supported language for a Telegram language_code, else the default."""
        if code:
            base = code.replace("_", "-").split("-")[0].lower()
            if base in self._translations:
                return base
        return self.default_language

    def text(self, language: str, key: str, /, **params: object) -> str:
        """Render a text; every placeholder value is HTML-escaped unless it is Safe."""
        template = self._template(language, key)
        escaped = {
            name: value if isinstance(value, Safe) else html.escape(str(value))
            for name, value in params.items()
        }
        return template.format(**escaped)

    def plain(self, language: str, key: str, /, **params: object) -> str:
        """Render a text for a message sent without parse_mode: nothing is escaped."""
        template = self._template(language, key)
        return template.format(**{name: str(value) for name, value in params.items()})

    def _template(self, language: str, key: str) -> str:
        # A text missing in one language (a bug the catalog tests catch) falls back to English rather
        # than leaving a person without an answer; a key missing everywhere is an error.
        for candidate in (language, "en"):
            translation = self._translations.get(candidate)
            if translation is not None:
                template = translation.gettext(key)
                if template != key:
                    return template
        raise MissingText(f"{key!r} has no text in {language!r} or English")

    def keys(self, language: str) -> dict[str, str]:
        """Return every key and its text in one language (for completeness checks)."""
        translation = self._translations[language]
        catalog: dict[str, str] = getattr(translation, "_catalog", {})
        return {k: v for k, v in catalog.items() if isinstance(k, str) and k}


def placeholders(template: str) -> set[str]:
    """Return the names of the {placeholders} in a text."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _load_language(locale_dir: Path, language: str) -> gettext.NullTranslations:
    folder = locale_dir / language / "LC_MESSAGES"
    mo, po = folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"
    if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as handle:
            return gettext.GNUTranslations(handle)
    return gettext.GNUTranslations(io.BytesIO(compile_po(po)))


def compile_po(po: Path) -> bytes:
    """Compile a .po file to .mo bytes with Babel."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as handle:
        catalog = read_po(handle, locale=po.parent.parent.name)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


@cache
def catalogs() -> Catalogs:
    """Return the catalogs, loaded once per process."""
    return Catalogs.load()
